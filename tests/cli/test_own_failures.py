"""hubert-fix's own failures never read as verdicts.

A failure the code did not anticipate is exit 4 (internal error) with one line naming the
file and the report that holds the traceback, never 0 or 1; the API lets it propagate.
(Ctrl-C: ``tests/cli/test_interrupts.py``.)
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import pytest
from conftest import CASES, RAW, run_main

import hubert_fix
from hubert_fix import runner
from hubert_fix.analysis.interface import Interface


@pytest.fixture(scope="module")
def repaired(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("repaired") / "hubert_base_tiny.onnx"
    hubert_fix.repair(RAW, path)
    return path


def _bug(*args: object, **kwargs: object) -> None:
    raise AttributeError("'NoneType' object has no attribute 'shape'")


@pytest.mark.parametrize(
    "argv",
    [
        ["check", RAW],
        ["repair", RAW, "-o", "{tmp}/out.onnx"],
        ["validate", "{repaired}", "--quick"],
        ["optimize", "{repaired}", "-o", "{tmp}/out.onnx", "--quick"],
    ],
    ids=lambda a: a[0],
)
def test_a_bug_in_the_analysis_is_exit_4_with_a_report(tmp_path: Path, monkeypatch, repaired: Path, argv: list) -> None:
    monkeypatch.setattr(runner, "run_passes", _bug)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    argv = [str(a).format(tmp=tmp_path, repaired=repaired) for a in argv]
    code, out, err = run_main(*argv)
    lines = err.strip().splitlines()
    assert code == 4 and len(lines) == 1, err
    assert argv[1] in lines[0] and "internal error" in lines[0] and "AttributeError" in lines[0]
    report = Path(re.search(r"traceback in (\S+?);", lines[0]).group(1))
    assert report.parent == tmp_path and "Traceback" in report.read_text() and "_bug" in report.read_text()
    assert not (tmp_path / "out.onnx").exists()


def test_a_bug_while_running_a_case_is_not_a_failed_case(monkeypatch, repaired: Path) -> None:
    """validate turns ONNX Runtime's errors into failed checks (a verdict), nothing else."""
    assert run_main("validate", repaired, "--reference", CASES)[0] == 0
    monkeypatch.setattr(Interface, "feeds", _bug)
    assert run_main("validate", repaired, "--reference", CASES)[0] == 4
    with pytest.raises(AttributeError):
        hubert_fix.validate(repaired, reference=CASES)  # the API: an exception, not a report


def test_the_api_lets_a_bug_propagate(monkeypatch) -> None:
    monkeypatch.setattr(runner, "run_passes", _bug)
    with pytest.raises(AttributeError):
        hubert_fix.check(RAW)
    assert not issubclass(AttributeError, hubert_fix.HubertFixError)


@pytest.mark.usefixtures("fresh_process")
def test_a_crash_of_onnx_shape_inference_is_exit_2(monkeypatch) -> None:
    """onnx's shape inference is C++ too (the fuzzer reached an assertion's abort in it):
    it runs in a child, and a crash there names the file, exit 2."""

    from hubert_fix.analysis import shapes

    monkeypatch.setattr(shapes, "_infer", lambda model: os.abort())
    code, _, err = run_main("check", RAW)
    assert (
        code == 2 and err.count("\n") == 1 and f"{RAW}: ONNX shape inference crashed on this model (SIGABRT" in err
    ), err
