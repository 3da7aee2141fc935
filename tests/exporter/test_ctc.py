"""Fine-tuned CTC recognisers: every fixture fine-tune exports, repairs and validates through the CLI.

``catalog.FINETUNES``: wav2vec 2.0 base and LV-60 large (``wav2vec_ctc``), HuBERT
(``hubert_ctc``, HuBERT's own recipe), an ``args``-style file and a hydra-era file
whose task is still ``audio_pretraining`` (these two need ``--dict-dir``). The raw
exports' check/repair/validate are in ``test_catalog.py``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import onnx
import pytest
from catalog import CTC_DICT_DIR, FINETUNES, Finetune
from conftest import FIXTURES, run_main

pytestmark = pytest.mark.export
DICT_DIR = FIXTURES / CTC_DICT_DIR


def _dict_args(spec: Finetune) -> list[object]:
    return ["--dict-dir", DICT_DIR] if spec.needs_dict_dir else []


@pytest.mark.parametrize("spec", FINETUNES.values(), ids=list(FINETUNES))
def test_export_repairs_and_validates_with_identical_greedy_paths(spec: Finetune, tmp_path: Path) -> None:
    pytest.importorskip("fairseq")
    out = tmp_path / "asr.onnx"
    code, stdout, err = run_main("export", FIXTURES / spec.file, "-o", out, "--json", *_dict_args(spec))
    assert code == 0, stdout + err
    report = json.loads(stdout)
    edits = {p["pass"]: len(p["edits"]) for p in report["repair"]["passes"] if p["edits"]}
    expected = (
        {"where-broadcast": 1, "frozen-slice": 1}
        if spec.family == "hubert"
        else {"where-broadcast": 1, "ctc-mask-scatter": 1}
    )
    assert edits == expected
    cases = [c for c in report["validation"]["cases"] if c["kind"] == "case"]
    assert len(cases) == 11 and all(c["status"] == "PASS" and c["greedy_path_identical"] for c in cases)
    assert any(c["batch"] > 1 for c in cases)  # padded batches: more than one padded frame
    model = onnx.load(str(out))
    assert [o.name for o in model.graph.output] == ["logits", "frame_padding_mask"]
    assert [i.name for i in model.graph.input] == ["source", "padding_mask"]
    meta = {p.key: p.value for p in model.metadata_props}
    vocabulary = json.loads(meta["hubert_fix.vocabulary"])
    assert vocabulary[:5] == ["<s>", "<pad>", "</s>", "<unk>", "|"] and len(vocabulary) == 32
    assert meta["hubert_fix.blank_index"] == "0" and meta["hubert_fix.pad_index"] == "1"
    assert meta["hubert_fix.kind"] == "ctc" and "transposed" in meta["hubert_fix.logits"]
    dims = [d.dim_param or d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim]
    assert dims[:2] == ["batch", "frames"] and dims[2] == 32


@pytest.mark.parametrize("spec", [f for f in FINETUNES.values() if f.needs_dict_dir], ids=lambda f: f.name)
def test_missing_dictionary_is_one_line(spec: Finetune, tmp_path: Path) -> None:
    pytest.importorskip("fairseq")
    out = tmp_path / "asr.onnx"
    code, stdout, err = run_main("export", FIXTURES / spec.file, "-o", out)
    assert code == 2 and stdout == "" and not out.exists()
    assert err.count("\n") == 1 and "dict.ltr.txt" in err and "--dict-dir" in err
    code, _, err = run_main("export", FIXTURES / spec.file, "-o", out, "--dict-dir", tmp_path)
    assert code == 2 and f"--dict-dir {tmp_path} has no dict.ltr.txt; give the folder that holds it" in err


@pytest.mark.parametrize("spec", [f for f in FINETUNES.values() if f.needs_dict_dir], ids=lambda f: f.name)
def test_the_dictionary_beside_the_checkpoint_is_found(spec: Finetune, tmp_path: Path) -> None:
    pytest.importorskip("fairseq")
    checkpoint = tmp_path / spec.file
    shutil.copyfile(FIXTURES / spec.file, checkpoint)
    shutil.copyfile(DICT_DIR / "dict.ltr.txt", tmp_path / "dict.ltr.txt")
    code, _, err = run_main("export", checkpoint, "-o", tmp_path / "out.onnx", "--raw")
    assert code == 0, err


@pytest.mark.parametrize("checkpoint", ["hubert_base_tiny.pt", "wav2vec2_base_ctc.pt"])
def test_a_dict_dir_that_does_not_exist_is_exit_2(checkpoint: str, tmp_path: Path) -> None:
    """Also where it is not needed (an encoder; a fine-tune that carries its vocabulary)."""
    pytest.importorskip("fairseq")
    code, _, err = run_main(
        "export", FIXTURES / checkpoint, "-o", tmp_path / "out.onnx", "--dict-dir", tmp_path / "nowhere"
    )
    assert code == 2 and err.strip().endswith("--dict-dir: no such folder") and not (tmp_path / "out.onnx").exists()


def test_without_pretraining_config_is_refused(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("fairseq")
    from fairseq.data.dictionary import Dictionary

    with torch.serialization.safe_globals([Dictionary]):
        state = torch.load(FIXTURES / "wav2vec2_base_ctc.pt", weights_only=True)
    state["cfg"]["model"]["w2v_args"] = None  # as HuBERT's own recipe saves on fairseq main (fairseq #4765)
    broken = tmp_path / "no_w2v_args.pt"
    torch.save(state, broken)
    code, stdout, err = run_main("export", broken, "-o", tmp_path / "asr.onnx")
    assert code == 2 and stdout == "" and err.count("\n") == 1
    assert "no pretraining config (w2v_args)" in err and "w2v_path" in err


def test_unknown_model_type_is_one_line(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("fairseq")
    from fairseq.data.dictionary import Dictionary

    with torch.serialization.safe_globals([Dictionary]):
        state = torch.load(FIXTURES / "wav2vec2_base_ctc.pt", weights_only=True)
    state["cfg"]["model"]["_name"] = "wav2vec_seq2seq_nonexistent"
    odd = tmp_path / "odd.pt"
    torch.save(state, odd)
    code, stdout, err = run_main("export", odd, "-o", tmp_path / "asr.onnx")
    assert code == 2 and stdout == "" and err.count("\n") == 1 and str(odd) in err


def test_options_that_do_not_apply_to_a_recogniser(tmp_path: Path) -> None:
    pytest.importorskip("fairseq")
    code, _, err = run_main(
        "export", FIXTURES / "wav2vec2_base_ctc.pt", "-o", tmp_path / "a.onnx", "--output-layer", "1"
    )
    assert code == 2 and "CTC recogniser" in err


def test_validate_reads_the_vocabulary_the_model_recorded(tmp_path: Path) -> None:
    """A checkpoint without its dictionary, none beside it, no --dict-dir: our export's metadata has it."""
    pytest.importorskip("fairseq")
    import hubert_fix

    model = tmp_path / "ctc.onnx"
    hubert_fix.repair(FIXTURES / "wav2vec2_base_ctc.raw.onnx", model)
    code, _, err = run_main("validate", model, "--checkpoint", FIXTURES / "wav2vec2_base_ctc_args.pt", "--quick")
    assert code == 0, err
    bare = onnx.load(str(model))
    kept = [p for p in bare.metadata_props if p.key != "hubert_fix.vocabulary"]
    del bare.metadata_props[:]
    bare.metadata_props.extend(kept)
    onnx.save(bare, str(model))
    code, _, err = run_main("validate", model, "--checkpoint", FIXTURES / "wav2vec2_base_ctc_args.pt", "--quick")
    assert code == 2 and "the folder that holds it as --dict-dir" in err


def test_a_ctc_export_without_our_metadata_is_recognised_by_its_masked_frames(tmp_path: Path) -> None:
    """A user's own CTC export: padded frames are -inf but for the blank; values, not a defect.
    An encoder output with -inf in it still fails."""
    import numpy as np

    import hubert_fix
    from hubert_fix.validation.run import _masked_logit_frames

    model = tmp_path / "ctc.onnx"
    hubert_fix.repair(FIXTURES / "wav2vec2_base_ctc.raw.onnx", model)
    bare = onnx.load(str(model))
    del bare.metadata_props[:]
    onnx.save(bare, str(model))
    code, out, err = run_main("validate", model, "--quick")
    assert code == 0, out + err
    frames = np.zeros((1, 4, 5), np.float32)
    frames[0, 2:, 1:] = -np.inf  # two padded frames: blank 0 finite, every other symbol -inf
    assert _masked_logit_frames(frames)
    frames[0, 3, 0] = -np.inf  # a frame with no finite symbol: not fairseq's mask
    assert not _masked_logit_frames(frames)


def _compare(output, expected, tol):
    import numpy as np

    from hubert_fix.validation.matrix import Case
    from hubert_fix.validation.report import CaseResult
    from hubert_fix.validation.run import _ctc_compared

    face = type("Face", (), {"stack": ((1, 1),), "blank": 0})()  # one frame per sample
    result = CaseResult("case", 1, expected.shape[1], ok=True)
    _ctc_compared(result, face, Case("case", (expected.shape[1],)), np.asarray(output), np.asarray(expected), tol)
    return result


def test_only_clear_frames_must_keep_their_greedy_symbol() -> None:
    import numpy as np

    from hubert_fix.validation.report import Tolerance

    expected = np.array([[[5.0, 0.0, 0.0], [0.0, 1.0, 0.99], [0.0, 0.0, 4.0]]])  # frame 1: gap 0.01
    tol = Tolerance(max_abs_diff=0.1)  # margin 0.2
    near_tie = expected.copy()
    near_tie[0, 1] = [0.0, 0.99, 1.0]  # flips within the margin: reported, not a failure
    result = _compare(near_tie, expected, tol)
    assert result.greedy_path_identical and result.greedy_unclear_frames == 1 and not result.failures
    assert result.greedy_token_error_rate == 0.5  # [1, 2] said as [2, 2]: one substitution of two tokens
    clear_flip = expected.copy()
    clear_flip[0, 2] = [0.0, 4.0, 0.0]  # a clear frame changes its symbol: a failure
    result = _compare(clear_flip, expected, tol)
    assert not result.greedy_path_identical and any("clear real frame" in f for f in result.failures)
    strict = _compare(near_tie, expected, Tolerance(max_abs_diff=0.1, greedy_margin=0.0))
    assert any("differs on 1 of 3 clear" in f for f in strict.failures)
    bounded = _compare(near_tie, expected, Tolerance(max_abs_diff=0.1, max_token_error_rate=0.25))
    assert any("token error rate 0.500 > 0.25" in f for f in bounded.failures)


def test_fp16_ctc_model_is_written_with_its_greedy_figures(tmp_path: Path) -> None:
    import hubert_fix

    repaired, out = tmp_path / "ctc.onnx", tmp_path / "ctc.fp16.onnx"
    hubert_fix.repair(FIXTURES / "wav2vec2_base_ctc.raw.onnx", repaired)
    code, stdout, err = run_main("optimize", repaired, "-o", out, "--fp16", "--json", "--quick")
    assert code == 0, stdout + err
    cases = [c for c in json.loads(stdout)["validation"]["cases"] if c["kind"] == "case"]
    assert cases and all(c["greedy_path_identical"] and c["greedy_token_error_rate"] is not None for c in cases)
