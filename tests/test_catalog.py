"""Every fixture export in ``fixtures/catalog/``, end to end through the CLI.

Architectures (HuBERT base/large, ContentVec, wav2vec 2.0 base/large, data2vec-audio,
transformers' HuBERT/wav2vec 2.0/WavLM/SEW/SEW-D/Conformer and their classification
heads), exporters (TorchScript, dynamo), opsets 11-20, fp16, static shapes, the layouts
others produce, and the wrappers users export (``fixtures/user_exports.py``): ``check``
finds exactly the catalogued edits (exit 0 where there are none), a broken raw file
fails validation and a right one passes, ``repair`` fixes it (or refuses, exit 3, where
the catalog says so, naming the pass), a second ``check`` finds nothing, and the repaired
file validates against the stored references (no torch needed), or against fairseq in
PyTorch in the export-marked test.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import onnx
import pytest
from catalog import EXPORTS, Export
from conftest import FIXTURES, float16_crash_here, run_main

IDS = [e.file for e in EXPORTS]
STORED = [e for e in EXPORTS if e.cases_file]


def _edits(report: dict) -> dict[str, int]:
    return {p["pass"]: len(p["edits"]) for p in report["passes"] if p["edits"]}


def _blocking(report: dict) -> set[str]:
    return {p["pass"] for p in report["passes"] for d in p["declined"] if d["blocking"]}


def _inputs(report: dict) -> list[dict]:
    return [c for c in report["cases"] if c["kind"] == "case"]


def _crashes(spec: Export) -> bool:
    """The repaired file crashes this ONNX Runtime's default CPU session (float16 Transpose -> MatMul)."""
    return spec.ort_crash and float16_crash_here()


#: What check and repair say of a float16 model whose repair crashes ONNX Runtime here: the route that loads.
ROUTE = "the route that loads: repair the float32 export (hubert-fix repair), then hubert-fix optimize --fp16"


@pytest.mark.parametrize("spec", EXPORTS, ids=IDS)
def test_check_finds_the_catalogued_edits(spec: Export) -> None:
    code, out, err = run_main("check", FIXTURES / spec.file, "--json")
    report = json.loads(out)
    if _crashes(spec):
        assert code == 2 and ROUTE in err and err.count("\n") == 1, err
    else:
        assert code == (3 if spec.unrepairable else 1 if spec.edits else 0), err  # 3: repair would refuse
    assert _edits(report) == spec.edits
    assert bool(report["unrepairable"]) == spec.unrepairable
    assert _blocking(report) == ({spec.refusal} if spec.refusal else set())


@pytest.mark.parametrize("spec", EXPORTS, ids=IDS)
def test_repair_then_validate(spec: Export, tmp_path: Path) -> None:
    out = tmp_path / "repaired.onnx"
    code, stdout, err = run_main("repair", FIXTURES / spec.file, "-o", out, "--json")
    if _crashes(spec):
        assert code == 2 and ROUTE in err and not out.exists()
        return
    if spec.unrepairable:
        assert code == 3 and not out.exists() and len(err.strip().splitlines()) == 1
        assert _blocking(json.loads(stdout)) == {spec.refusal}
        return
    assert code == 0, err
    assert json.loads(stdout)["edits"] == sum(spec.edits.values())
    assert run_main("check", out)[0] == 0  # idempotent on the real export
    repaired = onnx.load(str(out), load_external_data=False)
    assert repaired.opset_import[0].version == spec.opset
    if "where-broadcast" in spec.edits:
        unsqueezes = [n for n in repaired.graph.node if n.name.endswith("/cond_unsqueeze")]
        assert len(unsqueezes) == spec.edits["where-broadcast"]
        assert all(len(u.input) == (1 if spec.opset < 13 else 2) for u in unsqueezes)  # axes: attribute below 13
    if spec.layout.startswith("external data"):
        assert (tmp_path / "repaired.onnx.data").is_file()
    if spec.cases_file is None:
        return  # validated against fairseq in test_repaired_matches_fairseq
    code, stdout, err = run_main("validate", out, "--reference", FIXTURES / spec.cases_file, "--json")
    report = json.loads(stdout)
    assert report["precision"] == spec.precision
    if not spec.parity:  # a lossy quantization: every case runs, in shape; only the numbers miss int8's bounds
        assert code == 1 and not report["ok"], stdout
        failed = [c for c in report["cases"] if c["status"] == "FAIL"]
        assert failed and all(c["shape"] and c["compared"] for c in failed), stdout
        assert all(re.search(r"vs reference|between alone and in the batch", f) for c in failed for f in c["failures"])
        return
    assert code == 0 and report["ok"], stdout
    assert {c["status"] for c in report["cases"]} == {"PASS"}
    if spec.shape.startswith("static [1"):
        assert len(_inputs(report)) <= 2 and report["skipped"]
    elif spec.reference == "cases":
        assert len(_inputs(report)) == 11


@pytest.mark.parametrize("spec", STORED, ids=lambda e: e.file)
def test_raw_export_validates_only_if_nothing_is_wrong(spec: Export) -> None:
    code, stdout, err = run_main("validate", FIXTURES / spec.file, "--reference", FIXTURES / spec.cases_file, "--json")
    if _crashes(spec):  # neither the file nor its repair loads in this ONNX Runtime
        assert code == 2 and ROUTE in err, err
        return
    broken = bool(spec.edits) or spec.unrepairable or not spec.parity
    assert code == (1 if broken else 0) and json.loads(stdout)["ok"] is not broken


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
    assert code == 0 and report["ok"] and len(_inputs(report)) == 11, stdout + err
    if spec.interface.endswith("frame_padding_mask"):  # a CTC recogniser: the transcript fairseq would decode
        assert all(c["greedy_path_identical"] for c in _inputs(report))


@pytest.mark.parametrize(
    "stem", ["s3prl_hubert.issue5596", "s3prl_hubert.dynamo", "s3prl_wavlm", "torchaudio_hubert.lengths", "hf_sew_cls"]
)
def test_without_a_reference_the_probes_judge_the_new_patterns(stem: str, tmp_path: Path) -> None:
    """validate with no reference: the raw export fails its probes, the repaired one runs
    them (SEW fails the 1-frame input in PyTorch too: its squeeze needs 2 frames)."""
    raw, fixed = FIXTURES / f"{stem}.onnx", tmp_path / "fixed.onnx"
    assert run_main("validate", raw, "--quick")[0] == 1
    assert run_main("repair", raw, "-o", fixed)[0] == 0
    code, out, _ = run_main("validate", fixed, "--quick", "--json")
    failed = [c["name"] for c in json.loads(out)["cases"] if c["status"] == "FAIL"]
    assert failed == (["1 frame (shortest input)"] if stem == "hf_sew_cls" else []), failed
