"""dims: proven dimension facts (inference + provenance walk)."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import TensorProto, helper

import onnx_builders as ob
from hubert_fix.dims import analyze


def _facts(m: onnx.ModelProto):
    graph = gs.import_onnx(m)
    return graph, analyze(graph), graph.tensors()


def test_declared_symbols_equal_by_name_and_static_by_value():
    graph, facts, t = _facts(ob.where_model(["batch", "frames"], ["batch", "frames", 32]))
    assert facts.shape(t["x"]) == ("batch", "frames", 32)
    assert facts.same_dim(t["mask"], 0, t["x"], 0)
    assert facts.same_dim(t["mask"], 1, t["x"], 1)
    assert not facts.same_dim(t["mask"], 1, t["x"], 2)
    assert not facts.same_dim(t["mask"], 0, t["x"], 1)
    assert facts.describe(t["x"]) == "[batch, frames, 32]"


def test_different_symbols_are_not_equal():
    graph, facts, t = _facts(ob.where_model(["b2", "t2"], ["batch", "frames", 8]))
    assert not facts.same_dim(t["mask"], 0, t["x"], 0)


def test_walk_proves_what_inference_loses():
    graph, facts, t = _facts(ob.traced_mask_model())
    cond, x = t["cond"], t["x"]
    raw = facts.inferred["cond"]
    # ONNX alone does not know cond's axis 0 is batch (the dynamic Slice lost it) ...
    assert raw is not None and raw[0] != "batch"
    # ... the walk does: Not <- Greater <- ReduceMax <- Cast <- Reshape(Concat(Shape(sliced)[0], Shape(x)[1]))
    assert facts.same_dim(cond, 0, x, 0)
    assert facts.same_dim(cond, 1, x, 1)
    assert not facts.same_dim(cond, 1, x, 2)
    assert not facts.same_dim(cond, 0, x, 1)
    assert facts.describe(cond) == "[batch, frames]"


def test_unknown_op_stops_the_walk():
    nodes = [helper.make_node("NonZero", ["x"], ["nz"], name="nz"), helper.make_node("Transpose", ["nz"], ["y"], name="tr")]
    m = ob.model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "frames"])],
        [helper.make_tensor_value_info("y", TensorProto.INT64, ["n", 2])],
        17,
    )
    graph, facts, t = _facts(m)
    assert not facts.same_dim(t["y"], 1, t["x"], 0)
    assert not facts.same_dim(t["y"], 1, t["x"], 1)


def test_broadcast_needs_neutral_or_equal_other_operand():
    nodes = [
        helper.make_node("Mul", ["x", "s"], ["a"], name="scalar"),  # scalar: neutral
        helper.make_node("Add", ["x", "other"], ["b"], name="other"),  # other's axis 0 unrelated
    ]
    m = ob.model(
        nodes,
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "frames"]),
            helper.make_tensor_value_info("other", TensorProto.FLOAT, ["n", "frames"]),
        ],
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, ["o1", "o2"]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, ["o3", "o4"]),
        ],
        17,
        [ob.const("s", 2.0, np.float32)],
    )
    graph, facts, t = _facts(m)
    assert facts.root(t["a"], 0) == "batch"
    assert facts.same_dim(t["b"], 1, t["x"], 1)
    # batch vs n: either may be 1 and broadcast, so b's axis 0 is proven equal to neither.
    assert not facts.same_dim(t["b"], 0, t["x"], 0)
    assert not facts.same_dim(t["b"], 0, t["other"], 0)


def test_analyze_does_not_touch_the_graph_and_skips_big_weights():
    w = np.ones((100, 100), np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")]
    m = ob.model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 100])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 100])],
        17,
        [onnx.numpy_helper.from_array(w, "w")],
    )
    graph = gs.import_onnx(m)
    before = gs.export_onnx(graph).SerializeToString()
    facts = analyze(graph)
    assert facts.shape(graph.tensors()["y"]) == ("batch", 100)
    assert gs.export_onnx(graph).SerializeToString() == before
    assert not any(t.shape for t in graph.tensors().values() if isinstance(t, gs.Variable) and t.inputs and t not in graph.outputs)
