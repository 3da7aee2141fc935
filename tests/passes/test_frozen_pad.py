"""frozen-pad on hand-built graphs: must clamp, must NOT touch, idempotence, opset forms.

fairseq's ``pad_to_multiple`` traced with a float multiple (fairseq issue #5596) records
``pad = K - T`` with K the example's padded length; the fixtures show it end to end,
these graphs show each decision of the pass on its own.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_builders as ob
import pytest
from onnx import TensorProto, helper, numpy_helper

from hubert_fix.passes import FrozenPad, FrozenSlice

PASS = FrozenPad()
LENGTHS = (1, 5, 8, 12, 30)  # around K = 8: shorter, equal, longer


def _relu_of_every_length(m: onnx.ModelProto) -> None:
    session = ob.session(m)
    for t in LENGTHS:
        x = np.random.default_rng(t).standard_normal((2, t, 4)).astype(np.float32)
        np.testing.assert_array_equal(session.run(None, {"x": x})[0], np.maximum(x, 0), err_msg=f"T = {t}")


def _two_pads_model(trim_total: int, pad_op: str = "Pad") -> onnx.ModelProto:
    """The encoder's shape: ``8 - T`` pads x (``pad_op``), and the trim has its own ``trim_total - T``
    from its own Shape, as fairseq computes the pad of the features and of the trim separately."""
    nodes = [
        helper.make_node("Shape", ["x"], ["s"], name="/Shape"),
        helper.make_node("Gather", ["s", "i1"], ["t"], name="/Gather", axis=0),
        helper.make_node("Sub", ["k_pad", "t"], ["pad"], name="/Sub_pad"),
        helper.make_node("Reshape", ["pad", "one_vec"], ["pad_vec"], name="/Reshape"),
        helper.make_node("Concat", ["z", "z", "z", "z", "pad_vec", "z"], ["pads"], name="/Concat", axis=0),
        helper.make_node(pad_op, ["x", "pads"] if pad_op == "Pad" else ["x"], ["xp"], name="/Pad"),
        helper.make_node("Relu", ["xp"], ["enc"], name="/Relu"),
        helper.make_node("Shape", ["enc"], ["s2"], name="/Shape_2"),
        helper.make_node("Gather", ["s2", "i1"], ["t2"], name="/Gather_2", axis=0),
        helper.make_node("Sub", ["k_trim", "t"], ["trim"], name="/Sub_trim"),
        helper.make_node("Neg", ["trim"], ["neg"], name="/Neg"),
        *ob.unsqueeze(17, "neg", [0], "bound", "/Unsqueeze"),
        helper.make_node("Slice", ["enc", "start", "bound", "axes"], ["out"], name="/Slice"),
    ]
    inits = [
        ob.const("i1", 1), ob.const("one_vec", [1]), ob.const("z", [0]), ob.const("start", [0]),
        ob.const("axes", [1]), ob.const("k_pad", 8), ob.const("k_trim", trim_total),
    ]  # fmt: skip
    return ob.model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "T", 4])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", "kept", 4])],
        17,
        inits,
    )


@pytest.mark.parametrize("opset", [12, 13, 17, 18])
def test_a_frozen_padded_length_is_clamped_at_0(opset: int) -> None:
    m = ob.pad_trim_model(frozen=8, opset=opset)
    x = np.zeros((2, 12, 4), np.float32)
    assert ob.session(m).run(None, {"x": x})[0].shape == (2, 4, 4)  # 12 frames in, 4 out: the Pad cropped
    fixed, result = ob.run_pass(PASS, m)
    assert result.modified and [e.node for e in result.edits] == ["/Sub_pad"] and not result.declined
    edit = result.edits[0]
    assert "froze at 8" in edit.before and edit.after.startswith("pad = max(8 - ") and "inserted Max" in edit.action
    onnx.checker.check_model(fixed, full_check=True)
    [clamp] = [n for n in fixed.graph.node if n.op_type == "Max"]
    assert clamp.input[0] == "pad" and all("pad" not in n.input for n in fixed.graph.node if n is not clamp)
    zero = next(t for t in fixed.graph.initializer if t.name == clamp.input[1])
    assert numpy_helper.to_array(zero).tolist() == 0  # clamped at 0: nothing padded beyond K frames
    for t in (1, 5):  # up to K frames Max is the identity: padded to 8 as exported
        x = np.random.default_rng(t).standard_normal((2, t, 4)).astype(np.float32)
        np.testing.assert_array_equal(ob.session(fixed).run(None, {"x": x})[0], ob.session(m).run(None, {"x": x})[0])
    repaired, _ = ob.run_pass(FrozenSlice(), fixed)  # the trim by the same pad: frozen-slice's half
    _relu_of_every_length(repaired)


def test_a_frozen_padded_length_is_clamped_at_opset_11() -> None:
    """Max takes no integers below opset 12: the clamp is Where(Less(pad, 0), 0, pad), valid at 11, and
    recognised as a clamp (idempotent; frozen-slice then fixes the trim)."""
    fixed, result = ob.run_pass(PASS, ob.pad_trim_model(frozen=8, opset=11))
    assert result.modified and "Where(Less(pad, 0), 0, pad)" in result.edits[0].action
    onnx.checker.check_model(fixed, full_check=True)
    _, again = ob.run_pass(PASS, fixed)
    assert not again.edits and not again.declined
    repaired, _ = ob.run_pass(FrozenSlice(), fixed)
    _relu_of_every_length(repaired)


def test_the_clamp_is_idempotent() -> None:
    fixed, _ = ob.run_pass(PASS, ob.pad_trim_model(frozen=8))
    again, result = ob.run_pass(PASS, fixed)
    assert not result.modified and not result.edits and not result.declined
    assert again.graph == fixed.graph


def test_every_sub_of_the_frozen_length_is_clamped() -> None:
    """The trim computes ``8 - T`` from its own Shape: the same frozen length, clamped too."""
    fixed, result = ob.run_pass(PASS, _two_pads_model(trim_total=8))
    assert sorted(e.node for e in result.edits) == ["/Sub_pad", "/Sub_trim"]
    repaired, _ = ob.run_pass(FrozenSlice(), fixed)
    _relu_of_every_length(repaired)


def test_a_constant_minus_t_that_no_pad_uses_is_left_alone() -> None:
    """Only a K that reaches a Pad's pads is a frozen padded length: ``9 - T`` here is not one."""
    _, result = ob.run_pass(PASS, _two_pads_model(trim_total=9))
    assert [e.node for e in result.edits] == ["/Sub_pad"]
    _, result = ob.run_pass(PASS, _two_pads_model(trim_total=8, pad_op="Identity"))  # no Pad at all
    assert not result.modified and not result.edits and not result.declined


@pytest.mark.parametrize(
    "m",
    [ob.pad_trim_model(), ob.pad_trim_model(frozen=8, length=7)],
    ids=["computed pad (2 * ceil(T / 2) - T)", "static length (8 - 7 is the only pad)"],
)
def test_what_is_not_frozen_is_not_touched(m: onnx.ModelProto) -> None:
    _, result = ob.run_pass(PASS, m)
    assert not result.modified and not result.edits and not result.declined
