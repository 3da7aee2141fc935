"""cast-types: a Cast whose target contradicts its output's declared type (a float16 converter's leftover)."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_builders as ob
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from hubert_fix.passes import CastTypes

PASS = CastTypes()


def converted(
    to: int = TensorProto.FLOAT, declared: int = TensorProto.FLOAT16, *, output: bool = False
) -> onnx.ModelProto:
    """``y = Cast(x16, to) + 1`` with ``y`` declared ``declared``: what convert_float_to_float16 leaves of
    fairseq's ``input.float()`` in Fp32GroupNorm (to=FLOAT, every tensor declared float16)."""
    nodes = [helper.make_node("Cast", ["x"], ["y"], name="/norm/Cast", to=to)]
    if not output:
        nodes.append(helper.make_node("Add", ["y", "one"], ["z"], name="/norm/Add"))
    graph = helper.make_graph(
        nodes, "converted", [helper.make_tensor_value_info("x", TensorProto.FLOAT16, ["batch", 4])],
        [helper.make_tensor_value_info("y" if output else "z", declared, ["batch", 4])],
        [ob.const("one", 1.0, np.float16)], value_info=[] if output else [helper.make_tensor_value_info("y", declared, ["batch", 4])],
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_onnxruntime_refuses_the_converted_file():
    with pytest.raises(Exception, match="does not match expected type"):
        ob.session(converted())


def test_the_declared_type_is_given_after_the_cast():
    fixed, result = ob.run_pass(PASS, converted())
    assert result.modified and len(result.edits) == 1 and not result.declined
    edit = result.edits[0]
    assert edit.node == "/norm/Cast" and "computes FLOAT but its output is declared FLOAT16" in edit.before
    casts = [n for n in fixed.graph.node if n.op_type == "Cast"]
    assert [onnx.helper.get_attribute_value(c.attribute[0]) for c in casts] == [TensorProto.FLOAT, TensorProto.FLOAT16]
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float16)
    np.testing.assert_array_equal(ob.session(fixed).run(None, {"x": x})[0], x + np.float16(1))


def test_idempotent():
    fixed, _ = ob.run_pass(PASS, converted())
    _, again = ob.run_pass(PASS, fixed)
    assert not again.edits and not again.declined


@pytest.mark.parametrize("declared", [TensorProto.FLOAT])
def test_a_consistent_cast_is_not_a_candidate(declared):
    _, result = ob.run_pass(PASS, converted(declared=declared))
    assert not result.edits and not result.declined


def test_a_cast_without_a_declared_type_is_not_a_candidate():
    m = converted()
    del m.graph.value_info[:]
    _, result = ob.run_pass(PASS, m)
    assert not result.edits and not result.declined


@pytest.mark.parametrize(
    ("to", "declared", "output", "why"),
    [
        (TensorProto.FLOAT, TensorProto.FLOAT16, True, "its declared type is the interface"),
        (TensorProto.INT64, TensorProto.FLOAT16, False, "not both floats"),
    ],
)
def test_contradictions_no_float_conversion_explains_are_refused_with_the_route(to, declared, output, why):
    _, result = ob.run_pass(PASS, converted(to, declared, output=output))
    assert not result.edits and len(result.declined) == 1
    decline = result.declined[0]
    assert decline.blocking and why in decline.reason and "hubert-fix optimize --fp16" in decline.reason


def test_the_repaired_file_loads_in_onnxruntime():
    fixed, _ = ob.run_pass(PASS, converted())
    assert ort.InferenceSession(fixed.SerializeToString(), providers=["CPUExecutionProvider"]).get_outputs()
