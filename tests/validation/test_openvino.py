"""validate --runtime openvino: the matrix on OpenVINO's CPU plugin, in the precision it chooses here.

OpenVINO accepts the unrepaired export: it compiles it, then fails on every padded batch
and most lengths, gives NaN for the 1-frame input, and silently corrupts the padded
frames == C case; only the unpadded frames == C case comes out right. The repaired model
matches on every case. OpenVINO infers in bfloat16 on a CPU with BF16 and in float32
elsewhere: the assertions hold for both (the tolerance follows the precision it reports).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from conftest import CASES, RAW, run_main

pytest.importorskip("openvino")
pytestmark = pytest.mark.usefixtures("openvino_in_fp32")  # outcomes the same on every CPU


def test_the_repaired_model_validates_on_openvino(repaired_raw: Path) -> None:
    code, out, err = run_main("validate", repaired_raw, "--runtime", "openvino", "--reference", CASES, "--json")
    report = json.loads(out)
    assert code == 0, err
    assert report["provider"] in ("OpenVINO CPU (fp32)", "OpenVINO CPU (bf16)")
    precision = report["provider"].split("(")[1].rstrip(")")
    assert report["precision"] == precision
    if precision == "bf16":  # the bfloat16 tolerance, not float32's 1e-3
        assert report["tolerance"]["max_rel_diff"] == 0.1
    assert len(report["cases"]) == 13 and all(c["ok"] for c in report["cases"])


def test_openvino_runs_the_unrepaired_export_wrong() -> None:
    code, out, _ = run_main("validate", RAW, "--runtime", "openvino", "--reference", CASES, "--json")
    cases = {c["name"]: c for c in json.loads(out)["cases"]}
    assert code == 1
    assert cases["frames == C (32)"]["ok"]  # unpadded: the misaligned Where does nothing
    silent = cases["frames == C (32), batch 1 padded"]
    assert not silent["ok"] and silent["max_abs_diff"] > 1  # runs, and corrupts: only a reference shows it
    assert any("NaN" in f for f in cases["1 frame (shortest input)"]["failures"])
    assert any(f.startswith("OpenVINO failed: ") and "Where" in f for f in cases["batch 2, padded"]["failures"])


def test_through_the_api(repaired_raw: Path) -> None:
    import hubert_fix

    report = hubert_fix.validate(repaired_raw, reference=CASES, quick=True, runtime="openvino")
    assert report.ok and report.provider.startswith("OpenVINO CPU")


def test_openvino_is_cpu_only_here(repaired_raw: Path) -> None:
    code, _, err = run_main("validate", repaired_raw, "--runtime", "openvino", "--device", "cuda")
    assert code == 2 and "--runtime openvino runs on the CPU here" in err


def test_without_the_extra_the_error_names_it(repaired_raw: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)
    code, _, err = run_main("validate", repaired_raw, "--runtime", "openvino")
    assert code == 2 and "pip install -e '.[openvino]' in the hubert-fix checkout" in err and err.count("\n") == 1


def test_a_crash_of_openvino_is_exit_2(repaired_raw: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import os

    from hubert_fix.onnxio import openvino

    monkeypatch.setattr(openvino, "_probe", lambda path, precision: os.abort())
    model = tmp_path / "m.onnx"
    shutil.copyfile(repaired_raw, model)
    code, _, err = run_main("validate", model, "--runtime", "openvino")
    assert code == 2 and "OpenVINO crashed while compiling" in err and "SIGABRT" in err, err
