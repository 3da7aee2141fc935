"""validate feeds every interface a real export has: input roles, admitted cases, C, pooled outputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnx_builders as ob
import pytest
from conftest import FIXTURES, RAW, run_main
from onnx import TensorProto, helper

from hubert_fix.analysis.interface import ATTENTION_MASK, PADDING_MASK, describe


def _validate(*args: object) -> tuple[int, dict, str]:
    code, out, err = run_main("validate", *args, "--json", "--quick", "--device", "cpu")
    return code, json.loads(out) if out.strip().startswith("{") else {}, err


def test_fairseq_and_transformers_masks_are_told_apart() -> None:
    ours = describe(onnx.load(str(RAW), load_external_data=False), "raw")
    assert (ours.audio.name, ours.mask.name, ours.mask_role) == ("source", "padding_mask", PADDING_MASK)
    theirs = describe(onnx.load(str(FIXTURES / "hf_hubert.onnx")), "hf")
    assert (theirs.audio.name, theirs.mask.name, theirs.mask_role) == ("input_values", "attention_mask", ATTENTION_MASK)
    assert theirs.width == 32 and theirs.outputs[0].dims[2] == 32


def test_a_correct_transformers_export_validates_without_a_reference() -> None:
    code, report, err = _validate(FIXTURES / "hf_hubert.onnx")
    assert code == 0, err
    assert report["interface"]["mask"]["role"] == "attention_mask" and report["interface"]["mask"]["dtype"] == "int64"
    statuses = {c["kind"]: c["status"] for c in report["cases"]}
    assert statuses == {"static check": "PASS", "case": "RAN", "batch consistency": "PASS"}
    assert any("needs a reference" in note for note in report["not_checked"])


def test_the_role_override_is_used(tmp_path: Path) -> None:
    # Calling the int mask a padding mask inverts it: the real samples are then the masked ones.
    cases = FIXTURES / "hf_hubert.cases.npz"
    assert _validate(FIXTURES / "hf_hubert.onnx", "--reference", cases)[0] == 0
    code, report, _ = _validate(
        FIXTURES / "hf_hubert.onnx", "--reference", cases, "--input", "attention_mask=padding_mask"
    )
    assert code == 1 and report["interface"]["mask"]["role"] == "padding_mask"
    failed = {c["name"] for c in report["cases"] if not c["ok"]}
    assert {"1 s", "batch 2, padded"} <= failed


@pytest.mark.parametrize(
    ("value", "exit_code"),
    [("nope=audio", 2), ("attention_mask=mask", 64), ("attention_mask", 64)],  # 2: the model has no input "nope"
)
def test_a_bad_role_override_is_one_line(value: str, exit_code: int) -> None:
    code, out, err = run_main("validate", FIXTURES / "hf_hubert.onnx", "--input", value)
    assert code == exit_code and len(err.strip().splitlines()) == 1 and "--input" in err


def test_a_pooled_head_is_checked_as_batch_by_labels(tmp_path: Path) -> None:
    out = tmp_path / "cls.onnx"
    assert run_main("repair", FIXTURES / "hf_hubert_cls.onnx", "-o", out)[0] == 0
    code, report, err = _validate(out, "--reference", FIXTURES / "hf_hubert_cls.cases.npz")
    assert code == 0, err
    shapes = {tuple(c["expected_shape"]) for c in report["cases"] if c["kind"] == "case"}
    assert {shape[1] for shape in shapes} == {3} and {shape[0] for shape in shapes} == {1, 2, 3}


def test_c_is_the_width_the_mask_zeroes_not_the_output_width() -> None:
    # Features [B, T, 8] masked by frame, then projected to 4 (like final_proj): the
    # frames == C cases belong at 8, where the misaligned Where would corrupt silently.
    nodes = [
        helper.make_node("Unsqueeze", ["audio", "one"], ["audio3"], name="/u"),
        helper.make_node("Conv", ["audio3", "w"], ["conv"], name="/conv", kernel_shape=[400], strides=[320]),
        helper.make_node("Transpose", ["conv"], ["x"], name="/t", perm=[0, 2, 1]),
        helper.make_node("Where", ["mask", "zero", "x"], ["masked"], name="/Where"),
        helper.make_node("MatMul", ["masked", "proj"], ["y"], name="/proj"),
    ]
    model = ob.model(
        nodes,
        [helper.make_tensor_value_info("audio", TensorProto.FLOAT, ["batch", "samples"]),
         helper.make_tensor_value_info("mask", TensorProto.BOOL, ["batch", "frames"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "frames", "width"])],
        17,
        [ob.const("one", [1]), ob.const("zero", 0.0, np.float32), ob.const("w", np.zeros((8, 1, 400)), np.float32),
         ob.const("proj", np.zeros((8, 4)), np.float32)],
    )  # fmt: skip
    face = describe(model, "m")
    assert face.width == 8 and face.outputs[0].dims[2] == 4 and face.stack == ((400, 320),)
