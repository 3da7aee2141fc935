"""Damaged copies of a real export: every one is repaired or refused with one line.

Truncations at many offsets and random bit flips (seeded). A flip inside the weights can
leave a loadable model (repaired as usual, exit 0); everything else must be exit 2 with
one stderr line naming the file, no traceback, and no output file.
"""

from __future__ import annotations

import contextlib
import io
import random
import sys
from pathlib import Path

import pytest
from conftest import FIXTURES, RAW, assert_one_clear_line, run_cli

from hubert_fix.cli import main

sys.path.insert(0, str(FIXTURES.parent))
from fuzz.known import absurd_reshape_constant, unknown_data_type  # noqa: E402

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


@pytest.mark.parametrize("damage", [unknown_data_type, absurd_reshape_constant])
@pytest.mark.parametrize("command", ["check", "repair"])
def test_damage_the_loader_let_through_is_exit_2(tmp_path: Path, damage, command: str) -> None:
    path, out = tmp_path / "damaged.onnx", tmp_path / "out.onnx"
    damage(RAW, path)
    result = run_cli(command, path, *(["-o", out] if command == "repair" else []))
    assert_one_clear_line(result, path)
    assert "damaged ONNX model" in result.stderr and not out.exists()


def test_an_absurd_shape_the_loader_cannot_see_is_refused_in_bounded_memory(tmp_path: Path) -> None:
    # 2**35 is below the loader's bound, so shape inference meets it: it must stop at its budget.
    path = tmp_path / "huge.onnx"
    absurd_reshape_constant(RAW, path, value=1 << 35)
    result = run_cli("check", path)
    assert_one_clear_line(result, path)
    assert "shape inference needs more than" in result.stderr
