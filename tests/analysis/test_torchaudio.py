"""torchaudio's ``Wav2Vec2Model.forward(waveforms, lengths)``: the ``lengths`` role and the proof
of its mask (``fixtures/torchaudio_exports.py``; the catalog runs check, repair and
validate against each fixture's own cases)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from conftest import FIXTURES, run_main

from hubert_fix.analysis.interface import LENGTHS, describe

LENGTHS_TS = FIXTURES / "torchaudio_hubert.lengths.onnx"
LENGTHS_DYNAMO = FIXTURES / "torchaudio_hubert.lengths_dynamo.onnx"


def test_an_integer_batch_vector_is_the_lengths() -> None:
    face = describe(onnx.load(str(LENGTHS_TS)), "m")
    assert face.mask is not None and face.mask.name == "lengths" and face.mask_role == LENGTHS
    mask = np.zeros((2, 100), dtype=bool)
    mask[1, 60:] = True
    feeds = face.feeds(np.zeros((2, 100), np.float32), mask)
    assert feeds["lengths"].dtype == np.int64 and feeds["lengths"].tolist() == [100, 60]


def test_the_role_can_be_given(tmp_path: Path) -> None:
    code, out, err = run_main(
        "validate", LENGTHS_DYNAMO, "--input", "lengths=lengths", "--input", "waveforms=audio", "--quick", "--json"
    )
    assert code == 0, err


def test_without_a_reference_the_raw_export_fails_and_the_repaired_one_runs(tmp_path: Path) -> None:
    """The probes alone judge a lengths model: the misaligned Where fails at most lengths."""
    assert run_main("validate", LENGTHS_TS, "--quick")[0] == 1
    repaired = tmp_path / "fixed.onnx"
    assert run_main("repair", LENGTHS_TS, "-o", repaired)[0] == 0
    code, out, err = run_main("validate", repaired, "--quick")
    assert code == 0 and "failed" not in out, out + err


def test_the_mask_dims_are_proven_from_the_data_shape() -> None:
    """condition = Expand(Range(Shape(x)[1]), Concat(Shape(x)[0], Shape(x)[1])) >= Unsqueeze(lengths)."""
    code, out, err = run_main("check", LENGTHS_TS)
    assert code == 1 and "condition [batch, unk__10] vs data [batch, unk__7, 32]" in out, out + err
