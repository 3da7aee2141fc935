"""Damaged input found by fuzzing (fuzz/): each finding is refused with one line, and a
short fuzz run over the fixture corpus finds nothing new."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FIXTURES, RAW, run_cli
from test_cli import assert_one_clear_line

ROOT = FIXTURES.parent
sys.path.insert(0, str(ROOT))
from fuzz import known  # noqa: E402

ISSUE5596 = FIXTURES / "hubert_base_tiny.issue5596.onnx"
TINY = sorted((ROOT / "fuzz" / "findings").glob("*.onnx"))


@pytest.mark.parametrize(
    ("damage", "source", "expected"),
    [
        (known.unknown_data_type, RAW, "element type 39"),
        (known.absurd_reshape_constant, RAW, "larger than any tensor dimension"),
        (known.constant_size_mismatch, RAW, "bytes where its type and shape need"),
        (known.invalid_utf8_attribute, ISSUE5596, "string attribute"),
    ],
    ids=lambda v: getattr(v, "__name__", None) if callable(v) else "",
)
def test_a_damaged_fixture_is_one_line(tmp_path: Path, damage, source: Path, expected: str) -> None:
    path = tmp_path / "damaged.onnx"
    damage(source, path)
    result = run_cli("check", path)
    assert_one_clear_line(result, path)
    assert expected in result.stderr


def test_an_undefined_type_on_an_outside_weight_is_one_line(tmp_path: Path) -> None:
    # Element type 0 on a weight over 1 KiB: onnx.checker only sees it as a graph input.
    path = tmp_path / "damaged.onnx"
    known.unknown_data_type(RAW, path, value=0, initializer="model.feature_extractor.conv_layers.1.0.weight")
    assert_one_clear_line(run_cli("check", path), path)


def test_a_gather_index_past_the_shapes_is_refused_not_crashed(tmp_path: Path) -> None:
    # 2**32 + 1 as a Gather index: shapes and attributes then disagree; the walk stops there.
    path, out = tmp_path / "damaged.onnx", tmp_path / "out.onnx"
    known.gather_index_overflow(ISSUE5596, path)
    result = run_cli("repair", path, "-o", out)
    assert result.returncode in (2, 3) and "Traceback" not in result.stderr and not out.exists()


@pytest.mark.parametrize("path", TINY, ids=lambda p: p.name)
def test_each_tiny_reproducer_is_one_line(path: Path) -> None:
    assert_one_clear_line(run_cli("check", path), path)


def test_a_short_fuzz_run_finds_nothing(tmp_path: Path) -> None:
    """The seeds, then mutants (random engine, fixed seed): about a minute on 2 cores."""
    env = {**os.environ, "FUZZ_FINDINGS": str(tmp_path)}
    command = [sys.executable, str(ROOT / "fuzz" / "fuzz_load.py"), "--engine", "random", "--runs", "40", "--seed", "7"]
    result = subprocess.run([*command, str(ROOT / "fuzz" / "corpus")], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "findings 0" in result.stderr and list(tmp_path.iterdir()) == []
