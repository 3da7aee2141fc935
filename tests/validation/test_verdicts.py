"""The validator's own verdicts, each pinned by a model just past the bound it enforces.

Every wrong model elsewhere in the suite is wrong by far more than a tolerance (or
crashes), so a tolerance made 100 times looser, or a bound never applied, would pass
there. Here each model's reference is its own output moved by a chosen amount, so the
difference validate sees is exactly that amount; the bounds are the ones docs/validation.md
documents (``| fp32 | <= 1e-3 | >= 0.9999 |``), not read back from the code.
Also: the repair record is the report, and a mask sliced on the time axis is no proof.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnx_builders as ob
import onnxruntime as ort
import pytest
from conftest import CASES, RAW, ROOT
from onnx import TensorProto, helper

import hubert_fix
from hubert_fix.analysis.interface import describe
from hubert_fix.passes import WhereBroadcast
from hubert_fix.validation.cases import load_reference_cases, save_reference_cases

VALIDATION = (ROOT / "docs" / "validation.md").read_text()  # validate's tolerance table
DEPLOYMENT = (ROOT / "docs" / "deployment.md").read_text()  # optimize's


def _documented(precision: str) -> tuple[float, float]:
    """docs/validation.md's tolerance for ``precision``: (max abs diff, min cosine)."""
    row = re.search(rf"^\| {precision} \| <= (\S+) \| >= (\S+) \|$", VALIDATION, re.M)
    return float(row.group(1)), float(row.group(2))


def _appended(model: Path, out: Path, nodes: Callable[[str, str], list[onnx.NodeProto]]) -> Path:
    """``model`` with ``nodes(raw, output)`` between its first output and the graph's output."""
    m = onnx.load(str(model))
    output = m.graph.output[0].name
    for node in m.graph.node:
        node.output[:] = [f"{output}_raw" if name == output else name for name in node.output]
    m.graph.node.extend(nodes(f"{output}_raw", output))
    onnx.save(m, str(out))
    return out


def _own_reference(model: Path, out: Path, move: Callable[[np.ndarray], np.ndarray]) -> Path:
    """The quick cases of the fixture's reference file with ``move(model's own output)`` as features."""
    face = describe(onnx.load(str(model)), str(model))
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    stored = [entry for entry in load_reference_cases(CASES) if entry[0].samples < 160000]  # quick: no 10 s
    moved = [(case, s, m, move(session.run(None, face.feeds(s, m))[0])) for case, s, m, _ in stored]
    save_reference_cases(out, moved)
    return out


def _failures(report: hubert_fix.ValidationReport) -> dict[str, list[str]]:
    return {c.name: c.failures for c in report.cases if c.failures}


@pytest.mark.parametrize("times", [1.5, 0.5])
def test_a_difference_just_past_fp32s_max_abs_diff_fails(repaired_raw: Path, tmp_path: Path, times: float) -> None:
    bound, _ = _documented("fp32")

    def move(features: np.ndarray) -> np.ndarray:
        moved = features.copy()
        moved.flat[moved.size // 2] += times * bound  # one value, in every case: the cosine stays ~1
        return moved

    reference = _own_reference(repaired_raw, tmp_path / "ref.npz", move)
    report = hubert_fix.validate(repaired_raw, reference=reference, quick=True, device="cpu")
    compared = [c for c in report.cases if c.kind == "case"]
    assert len(compared) == 10 and all(c.max_abs_diff == pytest.approx(times * bound, rel=1e-3) for c in compared)
    if times < 1:
        assert report.ok, _failures(report)
    else:
        assert not report.ok and {c.name for c in compared} == set(_failures(report))
        assert all(f[0].startswith(f"max abs diff {times * bound:.3g} > ") for f in _failures(report).values())


def test_a_cosine_only_failure_fails(repaired_raw: Path, tmp_path: Path) -> None:
    """Outputs of about 1e-3 moved by half the diff bound: every diff passes, every cosine does not."""
    bound, min_cosine = _documented("fp32")
    small = _appended(
        repaired_raw,
        tmp_path / "small.onnx",
        lambda raw, out: [
            helper.make_node("Constant", [], ["scale"], value=helper.make_tensor("v", TensorProto.FLOAT, [], [1e-3])),
            helper.make_node("Mul", [raw, "scale"], [out]),
        ],
    )
    sign = lambda features: np.where(np.arange(features.size).reshape(features.shape) % 2, 1, -1)  # noqa: E731
    reference = _own_reference(small, tmp_path / "ref.npz", lambda f: f + 0.5 * bound * sign(f).astype(f.dtype))
    report = hubert_fix.validate(small, reference=reference, quick=True, device="cpu")
    compared = [c for c in report.cases if c.kind == "case"]
    assert len(compared) == 10 and all(c.max_abs_diff <= bound and c.cosine < min_cosine for c in compared)
    failures = _failures(report)
    assert set(failures) == {c.name for c in compared} and not report.ok
    assert all(len(f) == 1 and re.match(rf"cosine [\d.]+ < {min_cosine} vs reference", f[0]) for f in failures.values())


def test_a_model_that_mixes_the_utterances_of_a_batch_fails(repaired_raw: Path, tmp_path: Path) -> None:
    """Every case runs with the right shape, at batch 3 too; but each utterance gets half the batch's mean."""
    mixing = _appended(
        repaired_raw,
        tmp_path / "mixing.onnx",
        lambda raw, out: [
            helper.make_node("ReduceMean", [raw], ["mean"], axes=[0], keepdims=1),
            helper.make_node("Constant", [], ["half"], value=helper.make_tensor("v", TensorProto.FLOAT, [], [0.5])),
            helper.make_node("Mul", ["mean", "half"], ["share"]),
            helper.make_node("Add", [raw, "share"], [out]),
        ],
    )
    report = hubert_fix.validate(mixing, quick=True, device="cpu")
    consistency = next(c for c in report.cases if c.kind == "batch consistency")
    assert all(c.ok for c in report.cases if c.kind != "batch consistency")  # it runs, shapes and values finite
    assert not report.ok and not consistency.ok and consistency.shape == [3, 49, 32]
    assert len(consistency.failures) == 3 and all("between alone and in the batch" in f for f in consistency.failures)


def test_the_repair_record_is_the_report(tmp_path: Path) -> None:
    """What metadata_props["hubert_fix.repair"] keeps of each edit is what the report says of it."""
    out = tmp_path / "fixed.onnx"
    report = hubert_fix.repair(RAW, out)
    record = json.loads({p.key: p.value for p in onnx.load(str(out)).metadata_props}["hubert_fix.repair"])
    reported = [edit for p in report.to_dict()["passes"] for edit in p["edits"]]
    assert len(reported) == 2 and record["edits"] == reported == [e.to_dict() for e in report.edits]
    assert all(edit[key] for edit in reported for key in ("node", "op", "before", "after", "action"))


def _time_sliced_mask(flip: bool) -> onnx.ModelProto:
    """``Where(mask[:, :end], 0, x)`` with mask [batch, frames] and x [batch, frames, 8]: a slice
    *on the time axis* (``flip``: the whole-axis reversal ``mask.flip(1)``, which keeps its length)."""
    starts, ends, steps = ([-1], [-(2**63)], [-1]) if flip else ([0], None, [1])
    nodes = [
        helper.make_node("Slice", ["mask", "starts", "ends" if flip else "end", "axes", "steps"], ["sliced"]),
        helper.make_node("Where", ["sliced", "zero", "x"], ["y"], name="/encoder/Where"),
    ]
    inits = [
        ob.const("starts", starts),
        ob.const("axes", [1]),
        ob.const("steps", steps),
        ob.const("zero", 0.0, np.float32),
    ]
    inputs = [
        helper.make_tensor_value_info("mask", TensorProto.BOOL, ["batch", "frames"]),
        helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "frames", 8]),
    ]
    if flip:
        inits.append(ob.const("ends", ends))
    else:
        inputs.append(helper.make_tensor_value_info("end", TensorProto.INT64, [1]))
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "frames", 8])]
    return ob.model(nodes, inputs, outputs, 17, inits)


def test_a_mask_sliced_on_time_is_no_proof_of_its_length() -> None:
    """The walk follows a dim through a Slice of *another* axis only: cut on time, the mask's
    length is unknown, so the misaligned Where is declined, not 'repaired' on a guess."""
    _, result = ob.run_pass(WhereBroadcast(), _time_sliced_mask(flip=False))
    assert not result.modified and not result.edits and len(result.declined) == 1
    assert result.declined[0].node == "/encoder/Where" and result.declined[0].blocking
    _, control = ob.run_pass(WhereBroadcast(), _time_sliced_mask(flip=True))  # the same axis, its length kept
    assert control.modified and [e.node for e in control.edits] == ["/encoder/Where"]


_BOUNDS = {
    "max abs diff <= (\\S+) x the output's max": "max_rel_diff",
    "max abs diff <= (\\S+)(?:,|$)": "max_abs_diff",
    "(?<!frame )cosine >= (\\S+?)(?:,|$)": "min_cosine",
    "mean frame cosine >= (\\S+?)(?:,|$)": "min_mean_frame_cosine",
    "min frame cosine >= (\\S+?)(?:,|$)": "min_frame_cosine",
}


def _bounds(text: str) -> dict[str, float]:
    return {field: float(m.group(1)) for pattern, field in _BOUNDS.items() if (m := re.search(pattern, text))}


def test_the_tolerance_tables_are_the_documented_ones() -> None:
    """validate's table (Validation) and optimize's (Deployment) say what the code holds models to."""
    from dataclasses import asdict

    from hubert_fix.validation.report import OPTIMIZED_TOLERANCES, TOLERANCES

    def held(tol: hubert_fix.Tolerance) -> dict[str, float]:
        return {k: v for k, v in asdict(tol).items() if v is not None and k in _BOUNDS.values()}

    for precision in ("fp32", "fp16"):
        bound, cosine = _documented(precision)
        assert held(TOLERANCES[precision]) == {"max_abs_diff": bound, "min_cosine": cosine}, precision
    rows = [
        (line[2:6], line.split(" | ")[-1].removesuffix(" |"))  # cells part at " | " ("\|value\|" stays whole)
        for line in DEPLOYMENT.splitlines()
        if re.match(r"\| (fp32|int8|fp16) \| ", line) and " | max abs diff <= " in line
    ]
    assert [p for p, _ in rows] == ["fp32", "int8", "fp16"]
    for precision, cell in rows:
        assert held(OPTIMIZED_TOLERANCES[precision]) == _bounds(cell), precision
