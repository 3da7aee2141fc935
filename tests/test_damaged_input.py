"""Damaged copies of a real export: every one is repaired or refused with one line.

Truncations at many offsets and random bit flips (seeded). A flip inside the weights can
leave a loadable model (repaired as usual, exit 0); everything else must be exit 2 with
one stderr line naming the file, no traceback, and no output file.
"""

from __future__ import annotations

import contextlib
import io
import random
from pathlib import Path

import pytest
from conftest import RAW

from hubert_fix.cli.__init__ import main

RAW_BYTES = RAW.read_bytes()
RNG = random.Random(0)
TRUNCATIONS = sorted(RNG.sample(range(1, len(RAW_BYTES)), 60))


def flipped(seed: int) -> bytes:
    rng = random.Random(seed)
    data = bytearray(RAW_BYTES)
    for _ in range(rng.randint(1, 8)):
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    return bytes(data)


CORPUS = [(f"truncated at {n}", RAW_BYTES[:n]) for n in TRUNCATIONS]
CORPUS += [(f"bit flips, seed {seed}", flipped(seed)) for seed in range(60)]
# A flip that turns a node name into invalid UTF-8: parses and passes onnx.checker.
CORPUS.append(("invalid UTF-8 name", RAW_BYTES.replace(b"self_attn/Unsqueeze", b"self_attn/Unsqueez\xdf", 1)))


@pytest.mark.parametrize("name,data", CORPUS, ids=[name for name, _ in CORPUS])
def test_damaged_model_is_repaired_or_refused_cleanly(tmp_path: Path, name: str, data: bytes) -> None:
    model, out = tmp_path / "damaged.onnx", tmp_path / "out.onnx"
    model.write_bytes(data)
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(["repair", str(model), "-o", str(out), "-q"])
    assert code in ((2,) if name == "invalid UTF-8 name" else (0, 2)), (code, stderr.getvalue())
    if code == 2:
        lines = stderr.getvalue().strip().splitlines()
        assert len(lines) == 1 and str(model) in lines[0], stderr.getvalue()
        assert not out.exists()
    assert model.read_bytes() == data
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["damaged.onnx"] + (["out.onnx"] if code == 0 else []))
