"""int8 weights for CPU (``optimize --int8``): dynamic quantization of MatMul and Gemm.

Every MatMul (and plain Gemm) whose weight is a float constant of at least
``MIN_ELEMENTS`` values gets int8 weights, symmetric per output column (scale =
max |w| / 127, zero point 0), and reads its input quantized on the fly to uint8 with a
per-tensor scale (``DynamicQuantizeLinear``, shared by the MatMuls that read the same
tensor). In standard ONNX ops::

    DynamicQuantizeLinear(A) -> A_q, a_scale, a_zero
    MatMulInteger(A_q, W_q, a_zero, 0) -> Cast(float) -> Mul(a_scale * w_scale)

the form ONNX Runtime's CPU provider fuses into its DynamicQuantizeMatMul kernel.
Attention's activation x activation products stay in float: they have no constant
operand. So does the feature projection (``feature_projections``), as it does for OpenVINO.

Large Conv weights are stored in int8 the same way (per output channel) and expanded by a
``DequantizeLinear`` in front of the Conv, which still computes in float32: that makes
the file smaller, costs a few ms per run, and keeps the convolutions' accuracy (ONNX
Runtime's integer ConvInteger measured slower than its float Conv here, and one
activation scale per tensor costs more accuracy than the tolerance allows; the feature
extractor's wide convolutions run in int8 by ``conv_int8``'s per-row scheme instead).
The weights are read and converted one at a time (``weights``).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from hubert_fix.deploy.names import Names
from hubert_fix.onnxio.weights import Weights, attribute

#: Smaller weights are left in float (the quantize/dequantize steps would cost more than they save).
MIN_ELEMENTS = 1024
#: Conv weights stored in int8: the large ones only (the positional conv, 4.7M values at base
#: size). The feature extractor's seven convs compound their rounding: with their weights in
#: int8 too, the 1-frame case of base fell to cosine 0.9988 against the fp32 model.
MIN_CONV_ELEMENTS = 1 << 21


def quantize(weights: Weights, names: Names, *, keep: frozenset[str] = frozenset()) -> tuple[list[str], list[str]]:
    """Quantize in place (the float weights left unread: ``Weights.drop_unused``); the names of
    the MatMul/Gemm nodes and of the Conv nodes converted. ``keep``: the outputs of MatMul/Gemm
    nodes left in float."""
    graph = weights.graph
    shared: dict[str, tuple[str, str, str]] = {}  # input tensor -> its DynamicQuantizeLinear outputs
    converted, convs, nodes = [], [], []
    for node in graph.node:
        if _conv_weight(node, weights):
            nodes.append(_dequantized_weight(node, weights, names))
            nodes.append(node)
            convs.append(node.name)
            continue
        plan = None if node.output[0] in keep else _plan(node, weights)
        if plan is None:
            nodes.append(node)
            continue
        matrix, bias = plan
        stem = node.name or node.output[0]
        source = node.input[0]
        if source not in shared:
            quantized = tuple(names(f"{source}/int8/{part}") for part in ("value", "scale", "zero_point"))
            nodes.append(
                helper.make_node(
                    "DynamicQuantizeLinear", [source], list(quantized), name=names(f"{source}/int8/quantize")
                )
            )
            shared[source] = quantized
        a_value, a_scale, a_zero = shared[source]
        levels, scale = _symmetric(matrix, axis=1)
        w_value = weights.add(names(f"{stem}/int8/weight"), levels)
        w_zero = weights.add(names(f"{stem}/int8/weight_zero_point"), np.zeros(matrix.shape[1], dtype=np.int8))
        w_scale = weights.add(names(f"{stem}/int8/weight_scale"), scale)
        both, product, floats = (names(f"{stem}/int8/{part}") for part in ("scale", "int32", "float"))
        result = names(f"{stem}/int8/output") if bias is not None else node.output[0]
        nodes += [
            helper.make_node("Mul", [a_scale, w_scale], [both], name=names(f"{stem}/int8/scales")),
            helper.make_node(
                "MatMulInteger", [a_value, w_value, a_zero, w_zero], [product], name=names(f"{stem}/int8/matmul")
            ),
            helper.make_node("Cast", [product], [floats], to=onnx.TensorProto.FLOAT, name=names(f"{stem}/int8/cast")),
            helper.make_node("Mul", [floats, both], [result], name=names(f"{stem}/int8/rescale")),
        ]
        if bias is not None:
            nodes.append(helper.make_node("Add", [result, bias], [node.output[0]], name=names(f"{stem}/int8/bias")))
        converted.append(node.name)
    del graph.node[:]
    graph.node.extend(nodes)
    return converted, convs


def feature_projections(graph: onnx.GraphProto, audio: str) -> frozenset[str]:
    """The outputs of the MatMul/Gemm nodes the ``audio`` input reaches with no MatMul before them:
    the projection of the convolutions' features (fairseq's ``post_extract_proj``, transformers'
    ``feature_projection``), found by structure, as ``openvino_ir.feature_projections`` finds it in
    an OpenVINO model. Shape arithmetic is not followed (the padding mask's lengths read the
    features' shape).

    Measured on HuBERT base, ``optimize --int8``: with this projection in int8 (one activation
    scale for the whole LayerNorm'd feature tensor) the worst frame on 8 espeak-ng sentences was
    0.99728; kept float, 0.99852, and 10 s ran in 697.1 against 696.0 ms (1 thread).
    """
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    reached, todo, found = {audio}, [audio], set()
    while todo:
        tensor = todo.pop()
        for node in consumers.get(tensor, ()):
            if node.op_type in ("MatMul", "Gemm"):
                if node.input[0] == tensor:
                    found.add(node.output[0])
            elif node.op_type != "Shape":
                todo.extend(output for output in node.output if output not in reached)
                reached.update(node.output)
    return frozenset(found)


def _symmetric(values: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """int8 levels and float32 scales, one scale per index of ``axis`` (max |w| maps to 127)."""
    others = tuple(i for i in range(values.ndim) if i != axis)
    scale = (np.abs(values).max(axis=others) / 127.0).astype(np.float32)
    scale[scale == 0] = 1.0  # an all-zero channel: any scale gives zeros
    shape = [1] * values.ndim
    shape[axis] = -1
    levels = np.clip(np.rint(values / scale.reshape(shape)), -127, 127).astype(np.int8)
    return levels, scale


def _conv_weight(node: onnx.NodeProto, weights: Weights) -> bool:
    """A standard Conv whose weight is a float32 constant worth storing in int8.

    Per-channel ``DequantizeLinear`` (its ``axis``) needs opset 13: below, Conv weights stay float.
    """
    if node.op_type != "Conv" or node.domain not in ("", "ai.onnx") or len(node.input) < 2 or weights.opset < 13:
        return False
    tensor = weights.proto(node.input[1])
    return (
        tensor is not None and tensor.data_type == onnx.TensorProto.FLOAT and np.prod(tensor.dims) >= MIN_CONV_ELEMENTS
    )


def _dequantized_weight(node: onnx.NodeProto, weights: Weights, names: Names) -> onnx.NodeProto:
    """int8 levels and per-output-channel scales for the Conv's weight, and the DequantizeLinear it reads."""
    stem = node.name or node.output[0]
    levels, scale = _symmetric(weights.array(node.input[1]).astype(np.float32), axis=0)
    value = weights.add(names(f"{stem}/int8/weight"), levels)
    w_scale = weights.add(names(f"{stem}/int8/weight_scale"), scale)
    w_zero = weights.add(names(f"{stem}/int8/weight_zero_point"), np.zeros(levels.shape[0], dtype=np.int8))
    expanded = names(f"{stem}/int8/weight_float")
    node.input[1] = expanded
    return helper.make_node(
        "DequantizeLinear", [value, w_scale, w_zero], [expanded], axis=0, name=names(f"{stem}/int8/dequantize")
    )


def _plan(node: onnx.NodeProto, weights: Weights) -> tuple[np.ndarray, str | None] | None:
    """The float32 [K, N] weight matrix (and Gemm's bias input) of a node to quantize, else None."""
    if node.domain not in ("", "ai.onnx") or node.op_type not in ("MatMul", "Gemm") or len(node.input) < 2:
        return None
    tensor = weights.proto(node.input[1])
    if tensor is None or tensor.data_type != onnx.TensorProto.FLOAT or len(tensor.dims) != 2:
        return None
    if tensor.dims[0] * tensor.dims[1] < MIN_ELEMENTS:
        return None
    if node.op_type == "MatMul":
        return weights.array(node.input[1]).astype(np.float32), None
    if attribute(node, "transA", 0) or attribute(node, "alpha", 1.0) != 1.0 or attribute(node, "beta", 1.0) != 1.0:
        return None
    matrix = weights.array(node.input[1]).astype(np.float32)
    bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
    return (matrix.T if attribute(node, "transB", 0) else matrix), bias
