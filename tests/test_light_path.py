"""The repair path stays light: no torch, no fairseq; and writes are all-or-nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import onnx
import pytest
from conftest import RAW

import hubert_fix
from hubert_fix.onnxio import writing
from hubert_fix.onnxio.reading import load_model


def test_check_repair_validate_never_import_torch_or_fairseq(tmp_path: Path) -> None:
    out = tmp_path / "fixed.onnx"
    code = f"""
import sys
from hubert_fix.cli import main
codes = [main(["check", {str(RAW)!r}, "-q"]), main(["repair", {str(RAW)!r}, "-o", {str(out)!r}, "-q"]),
         main(["validate", {str(out)!r}, "--quick", "--device", "cpu", "-q"])]
heavy = sorted(m for m in ("torch", "fairseq") if m in sys.modules)
print(codes, heavy)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[1, 0, 0] []"


class Boom(KeyboardInterrupt):
    pass


@pytest.mark.parametrize("failure", [Boom, OSError])
def test_interrupted_write_leaves_the_previous_output(tmp_path: Path, monkeypatch, failure) -> None:
    out = tmp_path / "out.onnx"
    out.write_bytes(b"previous")
    model = load_model(RAW)
    real_fsync = writing.os.fsync

    def fail(fd: int) -> None:
        real_fsync(fd)
        raise failure("interrupted mid-write")

    monkeypatch.setattr(writing.os, "fsync", fail)
    with pytest.raises((Boom, writing.UnusableInputError)):
        writing.save_model(model, out)
    assert out.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.onnx"]


def test_write_is_complete_and_keeps_permissions_sane(tmp_path: Path) -> None:
    out = tmp_path / "out.onnx"
    writing.save_model(load_model(RAW), out)
    assert onnx.load(str(out)) == onnx.load(str(RAW))
    assert out.stat().st_mode & 0o644 == 0o644


def test_missing_extra_names_torch_and_a_command_that_pins_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from hubert_fix import exporter
    from hubert_fix.errors import MissingExtraError

    for name in ("trace", "loading", "modules", "finetuned"):  # as if never imported
        monkeypatch.delitem(sys.modules, f"hubert_fix.exporter.{name}", raising=False)
        monkeypatch.delattr(exporter, name, raising=False)
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(MissingExtraError) as caught:
        exporter.require()
    message = str(caught.value)
    assert "torch is not installed" in message and "hubert-fix[" not in message  # not on PyPI
    assert "pip install torch==2.13.0 -e '.[export]' in the hubert-fix checkout" in message
    assert f"pip install torch==2.13.0 'hubert_fix-{hubert_fix.__version__}-py3-none-any.whl[export]'" in message
    monkeypatch.setitem(sys.modules, "fairseq", None)  # a light install: neither is there
    with pytest.raises(MissingExtraError, match="torch and fairseq are not installed"):
        exporter.require()
