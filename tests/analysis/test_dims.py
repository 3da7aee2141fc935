"""dims: proven dimension facts (inference + provenance walk)."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_builders as ob
import onnx_graphsurgeon as gs
from onnx import TensorProto, helper

from hubert_fix.analysis.dims import analyze


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
    nodes = [
        helper.make_node("NonZero", ["x"], ["nz"], name="nz"),
        helper.make_node("Transpose", ["nz"], ["y"], name="tr"),
    ]
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
    assert not any(
        t.shape for t in graph.tensors().values() if isinstance(t, gs.Variable) and t.inputs and t not in graph.outputs
    )


def test_walk_steps_through_repeat_and_expand():
    # transformers' ``mask.unsqueeze(-1).repeat(1, 1, C)``: Unsqueeze, Expand to ones_like(repeats), Tile.
    nodes = [
        helper.make_node("Unsqueeze", ["mask", "axes"], ["u"], name="u"),
        helper.make_node("Shape", ["x"], ["sx"], name="sx"),
        helper.make_node("Gather", ["sx", "i2"], ["c"], name="c"),
        helper.make_node("Unsqueeze", ["c", "axes0"], ["c1"], name="c1"),
        helper.make_node("Concat", ["one", "one", "c1"], ["reps"], name="reps", axis=0),
        helper.make_node("Shape", ["reps"], ["sr"], name="sr"),
        helper.make_node("ConstantOfShape", ["sr"], ["ones"], name="ones", value=ob.const("v", [1])),
        helper.make_node("Expand", ["u", "ones"], ["e"], name="e"),
        helper.make_node("Tile", ["e", "reps"], ["t"], name="t"),
        helper.make_node("Expand", ["mask", "two_one"], ["wide"], name="wide"),
    ]
    inits = [ob.const("axes", [-1]), ob.const("axes0", [0]), ob.const("i2", 2), ob.const("one", [1]),
             ob.const("two_one", [2, 1])]  # fmt: skip
    m = ob.model(
        nodes,
        [helper.make_tensor_value_info("mask", TensorProto.BOOL, ["batch", "frames"]),
         helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "frames", 8])],
        [helper.make_tensor_value_info("t", TensorProto.BOOL, [None, None, None]),
         helper.make_tensor_value_info("wide", TensorProto.BOOL, [None, None])],
        17, inits,
    )  # fmt: skip
    graph, facts, t = _facts(m)
    tiled, wide = t["t"], t["wide"]
    assert facts.same_dim(tiled, 0, t["x"], 0) and facts.same_dim(tiled, 1, t["x"], 1)
    assert not facts.same_dim(tiled, 2, t["x"], 2)  # repeated C times: not proven by the walk
    assert facts.root(wide, 0) == 2 and facts.same_dim(wide, 1, t["x"], 1)  # Expand to [2, 1] keeps frames


def test_a_window_of_a_shape_vector_is_its_element():
    nodes = [
        helper.make_node("Shape", ["x"], ["sx"], name="sx"),
        helper.make_node("Slice", ["sx", "start", "end", "axes"], ["w"], name="w"),
    ]
    inits = [ob.const("start", [-2]), ob.const("end", [-1]), ob.const("axes", [0])]
    m = ob.model(
        nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "frames", 8])],
        [helper.make_tensor_value_info("w", TensorProto.INT64, [1])], 17, inits,
    )  # fmt: skip
    graph, facts, t = _facts(m)
    assert facts.scalar_dim(t["w"]) == "frames"


def _torch_pad_model(time_pad: str) -> onnx.ModelProto:
    """torch's F.pad(x, (0, 0, 0, n)) on [B, T, C] as the TorchScript exporter writes it:
    pads [0, 0, 0, n] padded to 6, reshaped [-1, 2], rows reversed, transposed, flattened."""
    c = lambda name, v: helper.make_node("Constant", [], [name], value=ob.const(name + "_v", v))  # noqa: E731
    nodes = [
        c("zeros", [0, 0, 0]),
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Gather", ["shape", "one"], ["t"], axis=0),
        helper.make_node("Unsqueeze", ["t", "axis0"], ["tv"]),
        helper.make_node("Concat", ["zeros", "tv" if time_pad == "dynamic" else "zero1"], ["four"], axis=0),
        c("two", [0, 0]),
        helper.make_node("Concat", ["four", "two"], ["six"], axis=0),
        c("pairs", [-1, 2]),
        helper.make_node("Reshape", ["six", "pairs"], ["grid"]),
        c("s", [-1]),
        c("e", [-(2**63) + 1]),
        c("a", [0]),
        c("st", [-1]),
        helper.make_node("Slice", ["grid", "s", "e", "a", "st"], ["rev"]),
        helper.make_node("Transpose", ["rev"], ["tr"], perm=[1, 0]),
        c("flat", [-1]),
        helper.make_node("Reshape", ["tr", "flat"], ["pads"]),
        helper.make_node("Pad", ["x", "pads"], ["y"], mode="constant"),
    ]
    inits = [ob.const("one", 1), ob.const("axis0", [0]), ob.const("zero1", [0])]
    return ob.model(
        nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "T", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, None, None])], 17, inits,
    )  # fmt: skip


def test_pad_keeps_the_dims_its_pads_leave_at_zero():
    """SEW's F.pad of the frame axis: batch and channels are kept, frames are not."""
    graph = gs.import_onnx(_torch_pad_model("dynamic"))
    facts, y = analyze(graph), graph.tensors()["y"]
    assert facts.root(y, 0) == "batch" and facts.root(y, 2) == 8
    assert facts.root(y, 1) != "T"  # padded by a computed amount: not the input's T
    unpadded = gs.import_onnx(_torch_pad_model("none"))  # F.pad(x, (0, 0, 0, 0)): every dim kept
    assert analyze(unpadded).root(unpadded.tensors()["y"], 1) == "T"
