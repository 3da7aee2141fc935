"""fairseq's 1-D convolutions run as 2-D ones: the same arithmetic, faster (``optimize``).

A Conv over [B, C, T] becomes Unsqueeze to [B, C, 1, T], the same Conv with a [1, k]
kernel, Squeeze. The weight's bytes do not change (only its dims). ONNX Runtime's CPU
provider applies its blocked NCHWc layout to 2-D convolutions only, and with it runs
the feature extractor and the positional conv faster. Unsqueeze and Squeeze take their
axes as an attribute below opset 13, as an input from 13.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from hubert_fix.deploy.names import Names
from hubert_fix.onnxio.weights import Weights, attribute, consumers


def _conv_1d(node: onnx.NodeProto, weights: Weights, readers: dict[str, int]) -> onnx.TensorProto | None:
    """The 3-D constant weight of a Conv this module may rewrite (read by this Conv alone), else None."""
    if node.op_type != "Conv" or node.domain not in ("", "ai.onnx") or len(node.input) < 2:
        return None
    weight = weights.proto(node.input[1])
    if weight is None or len(weight.dims) != 3 or readers[node.input[1]] != 1:
        return None
    if attribute(node, "auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        return None
    return weight


def conv_as_2d(weights: Weights, names: Names) -> list[str]:
    """Rewrite every eligible Conv in place; the names of the Conv nodes rewritten."""
    graph = weights.graph
    readers = consumers(graph)
    rewritten, nodes = [], []
    axis: list[str] = []  # the axes input, made once (opset >= 13)
    for node in graph.node:
        weight = _conv_1d(node, weights, readers)
        if weight is None:
            nodes.append(node)
            continue
        if weights.opset < 13:
            as_axes: dict[str, list[int]] = {"axes": [2]}
        else:
            axis = axis or [weights.add(names("hubert_fix_opt/axis_2"), np.array([2], dtype=np.int64))]
            as_axes = {}
        weight.dims.insert(2, 1)  # [C_out, C_in/g, k] -> [C_out, C_in/g, 1, k]: the same bytes
        stem = node.name or node.output[0]
        wide, flat = names(f"{stem}/as_2d_input"), names(f"{stem}/as_2d_output")
        nodes.append(
            helper.make_node(
                "Unsqueeze", [node.input[0], *axis], [wide], name=names(f"{stem}/as_2d_unsqueeze"), **as_axes
            )
        )
        result = node.output[0]
        node.input[0], node.output[0] = wide, flat
        for attr in node.attribute:
            if attr.name in ("kernel_shape", "strides", "dilations"):
                attr.ints[:] = [1, *attr.ints]
            elif attr.name == "pads":
                attr.ints[:] = [0, attr.ints[0], 0, attr.ints[1]]
        nodes.append(node)
        nodes.append(
            helper.make_node("Squeeze", [flat, *axis], [result], name=names(f"{stem}/as_2d_squeeze"), **as_axes)
        )
        rewritten.append(node.name)
    del graph.node[:]
    graph.node.extend(nodes)
    return rewritten
