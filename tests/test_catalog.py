"""Every fixture export in ``fixtures/catalog.py``, end to end through the CLI.

Architectures (HuBERT base/large, ContentVec, wav2vec 2.0 base/large, data2vec-audio),
exporters (TorchScript, dynamo), opsets 11-18, fp16, a static shape and the layouts
others produce: ``check`` finds exactly the catalogued edits, the raw file fails
validation, ``repair`` fixes it (or refuses, exit 3, where the catalog says so), a second
``check`` finds nothing, and the repaired file validates: against the stored base cases
here (no torch needed), against fairseq in PyTorch in the export-marked test.
"""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
from conftest import CASES, FIXTURES, run_main

from catalog import EXPORTS, Export

IDS = [e.file for e in EXPORTS]


def _edits(report: dict) -> dict[str, int]:
    return {p["pass"]: len(p["edits"]) for p in report["passes"] if p["edits"]}


@pytest.mark.parametrize("spec", EXPORTS, ids=IDS)
def test_check_finds_the_catalogued_edits(spec: Export) -> None:
    code, out, err = run_main("check", FIXTURES / spec.file, "--json")
    report = json.loads(out)
    assert code == 1, err
    assert _edits(report) == spec.edits
    assert bool(report["unrepairable"]) == spec.unrepairable


@pytest.mark.parametrize("spec", EXPORTS, ids=IDS)
def test_repair_then_validate(spec: Export, tmp_path: Path) -> None:
    out = tmp_path / "repaired.onnx"
    code, stdout, err = run_main("repair", FIXTURES / spec.file, "-o", out, "--json")
    if spec.unrepairable:
        assert code == 3 and not out.exists() and len(err.strip().splitlines()) == 1
        assert "one name" in stdout  # the reason says how to make the model provable
        return
    assert code == 0, err
    assert json.loads(stdout)["edits"] == sum(spec.edits.values())
    assert run_main("check", out)[0] == 0  # idempotent on the real export
    repaired = onnx.load(str(out), load_external_data=False)
    assert repaired.opset_import[0].version == spec.opset
    if "where-broadcast" in spec.edits:
        [unsqueeze] = [n for n in repaired.graph.node if n.name.endswith("/cond_unsqueeze")]
        assert len(unsqueeze.input) == (1 if spec.opset < 13 else 2)  # axes: attribute below opset 13
    if spec.layout.startswith("external data"):
        assert (tmp_path / "repaired.onnx.data").is_file()
    if spec.reference != "cases":
        return  # validated against fairseq in test_repaired_matches_fairseq
    code, stdout, err = run_main("validate", out, "--reference", CASES, "--json")
    report = json.loads(stdout)
    assert code == 0 and report["ok"], stdout
    assert report["precision"] == spec.precision
    if spec.shape.startswith("static"):
        assert [c["name"] for c in report["cases"]] == ["1 s"] and report["skipped"]
    else:
        assert len(report["cases"]) == 10


@pytest.mark.parametrize("spec", [e for e in EXPORTS if e.reference == "cases"], ids=lambda e: e.file)
def test_raw_export_fails_validation(spec: Export) -> None:
    code, stdout, _ = run_main("validate", FIXTURES / spec.file, "--reference", CASES, "--json")
    assert code == 1 and not json.loads(stdout)["ok"]


@pytest.mark.export
@pytest.mark.parametrize("spec", [e for e in EXPORTS if e.reference == "checkpoint"], ids=lambda e: e.file)
def test_repaired_matches_fairseq(spec: Export, tmp_path: Path) -> None:
    pytest.importorskip("fairseq")
    out = tmp_path / "repaired.onnx"
    assert run_main("repair", FIXTURES / spec.file, "-o", out)[0] == 0
    checkpoint = FIXTURES / f"{spec.checkpoint}.pt"
    raw_code, _, _ = run_main("validate", FIXTURES / spec.file, "--checkpoint", checkpoint, "--device", "cpu")
    assert raw_code == 1
    code, stdout, err = run_main("validate", out, "--checkpoint", checkpoint, "--device", "cpu", "--json")
    report = json.loads(stdout)
    assert code == 0 and report["ok"] and len(report["cases"]) == 10, stdout + err
