"""ONNX Runtime's contrib ops (what its optimizers write) have shapes, and quantized or float16 graphs
are told by what they compute."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_builders as ob
import onnx_graphsurgeon as gs
import pytest
from onnx import TensorProto, helper

from hubert_fix.analysis.contrib import CONTRIB, MICROSOFT
from hubert_fix.analysis.dims import analyze
from hubert_fix.analysis.interface import conv_stack_from_graph, graph_precision
from hubert_fix.passes import WhereBroadcast


def optimised(*, trans_a: int = 0) -> onnx.ModelProto:
    """``Where(mask, 0, FusedMatMul(SkipLayerNormalization(Gelu(x), x, g, b), w))``, as ONNX Runtime's
    extended optimisation and its transformers optimizer leave a fairseq encoder's layers."""
    ms = {"domain": MICROSOFT}
    nodes = [
        helper.make_node("Gelu", ["x"], ["g"], name="/Gelu", **ms),
        helper.make_node("SkipLayerNormalization", ["g", "x", "gamma", "beta"], ["n"], name="/SkipLN", **ms),
        helper.make_node("FusedMatMul", ["n", "w"], ["p"], name="/FusedMatMul", transA=trans_a, alpha=1.0, **ms),
        helper.make_node("Where", ["mask", "zero", "p"], ["y"], name="/encoder/Where"),
    ]
    graph = helper.make_graph(
        nodes, "optimised",
        [helper.make_tensor_value_info("mask", TensorProto.BOOL, ["batch", "frames"]),
         helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "frames", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "frames", 4])],
        [ob.const("gamma", np.ones(4), np.float32), ob.const("beta", np.zeros(4), np.float32),
         ob.const("w", np.eye(4), np.float32), ob.const("zero", 0.0, np.float32)],
    )  # fmt: skip
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid(MICROSOFT, 1)]
    return helper.make_model(graph, opset_imports=opsets, ir_version=8)


def test_shapes_come_through_the_contrib_ops_and_the_where_is_repaired():
    graph = gs.import_onnx(optimised())
    facts = analyze(graph)
    tensors = graph.tensors()
    assert [facts.shape(tensors[name]) for name in ("g", "n", "p")] == [("batch", "frames", 4)] * 3
    fixed, result = ob.run_pass(WhereBroadcast(), optimised())
    assert len(result.edits) == 1 and "condition [batch, frames] vs data [batch, frames, 4]" in result.edits[0].before
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 5, 4)).astype(np.float32)
    mask = rng.random((2, 5)) > 0.5
    y = ob.session(fixed).run(None, {"mask": mask, "x": x})[0]  # ONNX Runtime runs its own ops
    assert np.all(y[mask] == 0) and np.all(y[~mask] != 0)


def test_a_contrib_op_whose_rule_is_not_modelled_leaves_the_where_unexamined():
    """FusedMatMul with transA: MatMul's rule on a transposed operand, not modelled: no rank, declined."""
    _, result = ob.run_pass(WhereBroadcast(), optimised(trans_a=1))
    assert not result.edits and result.declined[0].blocking and "operand ranks" in result.declined[0].reason


def test_every_rule_names_a_standard_op_onnx_infers():
    for rule in CONTRIB.values():
        assert onnx.defs.has(rule.op), rule


def _conv(op: str) -> onnx.NodeProto:
    return helper.make_node(op, ["a", "w"], ["c"], kernel_shape=[3], strides=[2], group=1)


@pytest.mark.parametrize("op", ["Conv", "FusedConv", "ConvInteger", "QLinearConv"])
def test_the_conv_stack_is_found_in_fused_and_quantized_convolutions(op):
    graph = helper.make_graph([_conv(op)], "convs", [], [])
    assert conv_stack_from_graph(helper.make_model(graph)) == ((3, 2),)


@pytest.mark.parametrize(
    ("ops", "weights", "precision"),
    [
        (["Conv"], TensorProto.FLOAT, "fp32"),
        (["Conv"], TensorProto.FLOAT16, "fp16"),
        (["DynamicQuantizeLinear", "MatMulInteger"], TensorProto.FLOAT, "int8"),
        (["DequantizeLinear", "Conv"], TensorProto.FLOAT, "int8"),  # QDQ from quantize_static
    ],
)
def test_precision_is_what_the_graph_computes(ops, weights, precision):
    nodes = [helper.make_node(op, [], [f"o{i}"]) for i, op in enumerate(ops)]
    w = helper.make_tensor("w", weights, [64, 64], np.zeros(64 * 64).tolist())
    small = helper.make_tensor("s", TensorProto.FLOAT, [4], [0.0] * 4)  # float32 scales stay: most weights decide
    graph = helper.make_graph(nodes, "g", [], [], [w, small])
    assert graph_precision(helper.make_model(graph)) == precision
