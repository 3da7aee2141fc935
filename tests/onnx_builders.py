"""Tiny hand-built ONNX graphs for the pass tests (no torch, no fairseq).

Each builder returns an ``onnx.ModelProto`` that mimics one idiom of a
torch.onnx.export of fairseq HuBERT, small enough to read in the test.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from hubert_fix.analysis.dims import analyze
from hubert_fix.passes.contract import PassResult, RewritePass

Shape = Sequence[int | str]


def const(name: str, value: object, dtype: type = np.int64) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value, dtype=dtype), name)


def unsqueeze(opset: int, data: str, axes: list[int], out: str, name: str) -> list[onnx.NodeProto]:
    """An Unsqueeze in the form ``opset`` requires (attribute < 13 <= input)."""
    if opset < 13:
        return [helper.make_node("Unsqueeze", [data], [out], name=name, axes=axes)]
    return [
        helper.make_node("Constant", [], [f"{name}_axes"], name=f"{name}_c", value=const("v", axes)),
        helper.make_node("Unsqueeze", [data, f"{name}_axes"], [out], name=name),
    ]


def model(nodes: list[onnx.NodeProto], inputs: list, outputs: list, opset: int, inits=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "test", inputs, outputs, list(inits))
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    onnx.checker.check_model(m)
    return m


def where_model(cond_shape: Shape, data_shape: Shape, opset: int = 17) -> onnx.ModelProto:
    """``y = Where(mask, 0, x)``: the exporter's form of ``x[mask] = 0`` (no Unsqueeze)."""
    nodes = [helper.make_node("Where", ["mask", "zero", "x"], ["y"], name="/encoder/Where")]
    return model(
        nodes,
        [
            helper.make_tensor_value_info("mask", TensorProto.BOOL, list(cond_shape)),
            helper.make_tensor_value_info("x", TensorProto.FLOAT, list(data_shape)),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(data_shape))],
        opset,
        [const("zero", 0.0, np.float32)],
    )


def traced_mask_model(opset: int = 17) -> onnx.ModelProto:
    """The real graph's idiom: the mask is a Slice with dynamic ends, reshaped with a traced shape.

    ``sliced = mask_in[:, :end]``; ``cond = Not(Reshape(Not(sliced), [B(sliced), T(x), -1]))``
    reduced over its last axis (``ReduceMax`` of a Cast) and compared, then ``Where(cond, 0, x)``.
    ONNX inference alone gives cond fresh ``unk__`` dims; only the walk proves
    cond axis 0 == batch and cond axis 1 == x axis 1.
    """
    nodes = [
        helper.make_node("Slice", ["mask_in", "zero_i", "end", "one_i"], ["sliced"], name="/Slice"),
        helper.make_node("Shape", ["sliced"], ["shape_s"], name="/Shape_2"),
        helper.make_node("Gather", ["shape_s", "i0"], ["b"], name="/Gather_2", axis=0),
        helper.make_node("Shape", ["x"], ["shape_x"], name="/Shape_1"),
        helper.make_node("Gather", ["shape_x", "i1"], ["t"], name="/Gather_1", axis=0),
        *unsqueeze(opset, "b", [0], "b1", "/Unsqueeze_1"),
        *unsqueeze(opset, "t", [0], "t1", "/Unsqueeze_2"),
        helper.make_node("Concat", ["b1", "t1", "minus1"], ["new_shape"], name="/Concat", axis=0),
        helper.make_node("Not", ["sliced"], ["not1"], name="/Not"),
        helper.make_node("Reshape", ["not1", "new_shape"], ["r"], name="/Reshape"),
        helper.make_node("Cast", ["r"], ["r_i"], name="/Cast_1", to=TensorProto.INT64),
        helper.make_node("ReduceMax", ["r_i"], ["red"], name="/ReduceMax", axes=[-1], keepdims=0),
        helper.make_node("Greater", ["red", "zero_scalar"], ["gt"], name="/Greater"),
        helper.make_node("Not", ["gt"], ["cond"], name="/Not_1"),
        helper.make_node("Where", ["cond", "zero", "x"], ["y"], name="/encoder/Where"),
    ]
    inits = [
        const("zero_i", [0]),
        const("one_i", [1]),
        const("i0", 0),
        const("i1", 1),
        const("minus1", [-1]),
        const("zero_scalar", 0),
        const("zero", 0.0, np.float32),
    ]
    return model(
        nodes,
        [
            helper.make_tensor_value_info("mask_in", TensorProto.BOOL, ["batch", "samples"]),
            helper.make_tensor_value_info("end", TensorProto.INT64, [1]),
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "frames", 8]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "frames", 8])],
        opset,
        inits,
    )


def negation_nodes(form: str, n: str, out: str) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """``out = -n`` as the TorchScript (``neg``) or dynamo (``mul``, ``sub``) exporter writes it."""
    if form == "neg":
        return [helper.make_node("Neg", [n], [out], name="/Neg")], []
    if form == "mul":
        return [helper.make_node("Mul", [n, "minus_one"], [out], name="/Mul")], [const("minus_one", -1)]
    if form == "mul_left":
        return [helper.make_node("Mul", ["minus_one", n], [out], name="/Mul")], [const("minus_one", -1)]
    if form == "sub":
        return [helper.make_node("Sub", ["zero_s", n], [out], name="/Sub")], [const("zero_s", 0)]
    raise ValueError(form)


def frozen_slice_model(
    form: str = "neg",
    opset: int = 17,
    n_from_input: bool = False,
    divisor_from_input: bool = False,
    dividend: str = "samples",
) -> onnx.ModelProto:
    """HuBERT's ``padding_mask[:, :-extra]`` with the ``if extra > 0`` frozen away.

    ``extra = Mod(samples, frames)`` from the two inputs' shapes. With ``n_from_input``
    the negated value is a graph input ``k`` (not a remainder); with
    ``divisor_from_input`` it is ``Mod(samples, k)`` (a remainder of unknown sign);
    ``dividend="frames"`` divides another dim than the sliced one.
    Output: the sliced mask (float).
    """
    if n_from_input:
        nodes: list[onnx.NodeProto] = []
        inits: list[onnx.TensorProto] = []
        n = "k"
    else:
        divisor = "k" if divisor_from_input else "frames"
        nodes = [
            helper.make_node("Shape", ["pm"], ["s_pm"], name="/Shape"),
            helper.make_node("Gather", ["s_pm", "i1"], ["samples"], name="/Gather", axis=0),
            helper.make_node("Shape", ["features"], ["s_f"], name="/Shape_1"),
            helper.make_node("Gather", ["s_f", "i1"], ["frames"], name="/Gather_1", axis=0),
            helper.make_node("Mod", [dividend, divisor], ["extra"], name="/Mod", fmod=0),
        ]
        inits = [const("i1", 1)]
        n = "extra"
    neg_nodes, neg_inits = negation_nodes(form, n, "neg")
    nodes += neg_nodes
    nodes += unsqueeze(opset, "neg", [0], "ends", "/Unsqueeze")
    nodes.append(helper.make_node("Slice", ["pm", "start", "ends", "axes", "steps"], ["out"], name="/Slice"))
    inits += [*neg_inits, const("start", [0]), const("axes", [1]), const("steps", [1])]
    inputs = [
        helper.make_tensor_value_info("pm", TensorProto.FLOAT, ["batch", "samples"]),
        helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", "frames", 4]),
    ]
    if n_from_input or divisor_from_input:
        inputs.append(helper.make_tensor_value_info("k", TensorProto.INT64, []))
    return model(
        nodes, inputs, [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", "kept"])], opset, inits
    )


def pad_trim_model(
    form: str = "neg",
    opset: int = 17,
    begin: bool = False,
    start: bool = False,
    frozen: int | None = None,
    length: int | str = "T",
) -> onnx.ModelProto:
    """fairseq's ``pad_to_multiple(x, 2)`` then ``if pad > 0: x = x[:, :-pad]``, guard dropped.

    ``pad = 2 * ((T + 1) // 2) - T`` pads the end of axis 1 of x [batch, T, 4] (its
    beginning with ``begin=True``, which is no ``pad_to_multiple``); a Relu stands for
    the encoder between; the Slice trims by the same ``pad``. With ``start=True`` it
    selects the padded tail instead, ``x[:, -pad:]`` (fairseq marks it in a new mask).
    ``frozen=K`` pads to the constant length K instead (``pad = K - T``, what a trace
    records when the multiple is a float); ``length`` is x's axis 1.
    """
    nodes = [
        helper.make_node("Shape", ["x"], ["s_x"], name="/Shape"),
        helper.make_node("Gather", ["s_x", "i1"], ["t"], name="/Gather", axis=0),
        helper.make_node("Add", ["t", "one"], ["t1"], name="/Add"),
        helper.make_node("Div", ["t1", "two"], ["half"], name="/Div"),
        helper.make_node("Mul", ["half", "two"], ["computed"], name="/Mul_2"),
        helper.make_node(
            "Cast", ["frozen" if frozen else "computed"], ["padded"], name="/Padded", to=TensorProto.INT64
        ),
        helper.make_node("Sub", ["padded", "t"], ["pad"], name="/Sub_pad"),
        helper.make_node("Reshape", ["pad", "one_vec"], ["pad_vec"], name="/Reshape"),
        helper.make_node(
            "Concat",
            ["z", "pad_vec", "z", "z", "z", "z"] if begin else ["z", "z", "z", "z", "pad_vec", "z"],
            ["pads"],
            name="/Concat",
            axis=0,
        ),
        helper.make_node("Pad", ["x", "pads"], ["xp"], name="/Pad"),
        helper.make_node("Relu", ["xp"], ["enc"], name="/Relu"),
    ]
    neg_nodes, neg_inits = negation_nodes(form, "pad", "neg")
    nodes += neg_nodes
    nodes += unsqueeze(opset, "neg", [0], "bound", "/Unsqueeze")
    bounds = ["bound", "last"] if start else ["start", "bound"]
    nodes.append(helper.make_node("Slice", ["enc", *bounds, "axes"], ["out"], name="/Slice"))
    inits = [
        const("i1", 1), const("one", 1), const("two", 2), const("one_vec", [1]), const("z", [0]),
        const("start", [0]), const("last", [2**63 - 1]), const("axes", [1]), const("frozen", frozen or 0), *neg_inits,
    ]  # fmt: skip
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", length, 4])]
    return model(
        nodes, inputs, [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", "kept", 4])], opset, inits
    )


# ------------------------------------------------------------------ running passes


def run_pass(p: RewritePass, m: onnx.ModelProto, *, apply: bool = True) -> tuple[onnx.ModelProto, PassResult]:
    """Run one pass as the runner does (analyze, run, cleanup/toposort when modified)."""
    graph = gs.import_onnx(m)
    result = p.run(graph, analyze(graph), apply=apply)
    if result.modified:
        graph.cleanup().toposort()
    out = gs.export_onnx(graph)
    return out, result


def session(m: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])


def masked_zero(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """PyTorch's ``x[mask] = 0`` with a left-aligned lower-rank mask."""
    y = x.copy()
    y[mask] = 0
    return y
