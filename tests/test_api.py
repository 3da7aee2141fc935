"""The Python API through its public names only: what a pipeline written in Python uses."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CASES, FIXTURES, RAW, run_main

import hubert_fix


def test_check_repair_validate(tmp_path: Path) -> None:
    report = hubert_fix.check(RAW)
    assert isinstance(report, hubert_fix.Report)
    assert [e.node for e in report.edits] == ["/encoder/Where", "/Slice"] and report.blocking == 0
    out = tmp_path / "fixed.onnx"
    repaired = hubert_fix.repair(str(RAW), out)
    assert repaired.applied and len(repaired.edits) == 2 and out.is_file()
    assert hubert_fix.check(out).edits == []
    verdict = hubert_fix.validate(out, reference=CASES, quick=True)
    assert isinstance(verdict, hubert_fix.ValidationReport) and verdict.ok
    assert all(isinstance(c, hubert_fix.CaseResult) and c.status == "PASS" for c in verdict.cases)
    json.dumps(verdict.to_dict()), json.dumps(repaired.to_dict())  # the --json objects


def test_errors_are_one_family_with_the_cli_exit_codes(tmp_path: Path) -> None:
    with pytest.raises(hubert_fix.UnusableInputError) as missing:
        hubert_fix.check(tmp_path / "missing.onnx")
    assert missing.value.exit_code == 2 and isinstance(missing.value, hubert_fix.HubertFixError)
    out = tmp_path / "out.onnx"
    with pytest.raises(hubert_fix.UnrepairableError) as refused:
        hubert_fix.repair(FIXTURES / "hubert_base_tiny.dynamo_batch1/model.onnx", out)
    assert refused.value.exit_code == 3 and refused.value.report.blocking == 1 and not out.exists()
    with pytest.raises(hubert_fix.UnusableInputError):
        hubert_fix.repair(RAW, RAW)  # the input itself, without in_place
    with pytest.raises(hubert_fix.UnusableInputError):
        hubert_fix.validate(RAW, checkpoint=FIXTURES / "hubert_base_tiny.pt", reference=CASES)


def test_arguments_are_not_modified(tmp_path: Path) -> None:
    roles = {"attention_mask": "attention_mask"}
    skip = ["frozen-batch"]
    before = RAW.read_bytes()
    hubert_fix.validate(FIXTURES / "hf_hubert.onnx", roles=roles, quick=True)
    hubert_fix.check(RAW, skip=skip)
    hubert_fix.repair(RAW, tmp_path / "out.onnx", skip=skip)
    assert roles == {"attention_mask": "attention_mask"} and skip == ["frozen-batch"]
    assert RAW.read_bytes() == before


def test_the_api_imports_neither_torch_nor_fairseq() -> None:
    code = (
        "import sys, hubert_fix; "
        f"hubert_fix.validate({str(RAW)!r}, reference={str(CASES)!r}, quick=True); "
        "print(sorted(m for m in ('torch', 'fairseq') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_library_errors_speak_the_api_and_the_cli_adds_its_flags(tmp_path) -> None:
    """An API error names the argument (``in_place=True``); the CLI shows its flag (``--in-place``)."""
    from hubert_fix.errors import UnusableInputError

    model = tmp_path / "m.onnx"
    model.write_bytes(RAW.read_bytes())
    with pytest.raises(UnusableInputError) as caught:
        hubert_fix.repair(model, model)
    assert "or in_place=True" in str(caught.value) and "--" not in str(caught.value)
    code, _, err = run_main("repair", model, "-o", model.parent / "." / model.name)
    assert code == 2 and "choose another -o, or --in-place" in err, err


def test_no_library_error_names_a_cli_flag() -> None:
    """Messages raised below the CLI (hubert_fix/cli/) name API arguments (errors.argument), never flags."""
    import ast
    import re

    root = Path(hubert_fix.__file__).parent
    offenders = []
    for path in root.rglob("*.py"):
        if "cli" in path.relative_to(root).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Raise) and node.exc is not None:
                for text in (
                    n.value for n in ast.walk(node.exc) if isinstance(n, ast.Constant) and isinstance(n.value, str)
                ):
                    if re.search(r"(^|[\s(])--[a-z]", text):
                        offenders.append(f"{path.relative_to(root)}:{node.lineno}: {text}")
    assert not offenders, offenders
