"""A half-precision model for GPUs (``optimize --fp16``), with the same inputs and outputs.

A plain float16 conversion (every float tensor and every ``Cast(to=float)`` turned to
float16) breaks these graphs twice: fairseq's lengths and frame counts are computed in
float (``Cast`` of a sample count, ``Div``, ``Floor``), and a sample count past 65504 is
infinite in float16; and normalizations fairseq runs in float32 on purpose
(``Fp32GroupNorm``, ``Fp32LayerNorm``) lose it.

So the conversion follows the *values* of the float inputs (the audio): a tensor is
converted when it is computed from them, through any op but ``Shape`` and ``Size``
(which read only dims). Length arithmetic, which starts from shapes and masks, stays as
it was. On that path every op runs in float16, except normalizations and the pieces of
decomposed ones (``KEEP_FP32``), which read float32 and give float32 to each other;
casts are inserted where the two meet. Constants feeding float16 ops are converted
(saturated to the float16 range); the model's float inputs and outputs stay float32,
with a cast after each input and before each output, so callers feed and read what they
did before.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
from onnx import helper

from hubert_fix.analysis.shapes import INFERENCE_BUDGET, memory_budget
from hubert_fix.deploy.names import Names
from hubert_fix.errors import UnrepairableError
from hubert_fix.onnxio.checking import checkable
from hubert_fix.onnxio.weights import Weights

FLOAT, HALF = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
#: Ops that keep float32 (norms, and what a norm exported before opset 17 is made of).
KEEP_FP32 = frozenset({
    "InstanceNormalization", "LayerNormalization", "GroupNormalization", "BatchNormalization",
    "ReduceMean", "ReduceSum", "ReduceSumSquare", "Pow", "Sqrt", "Reciprocal",
})  # fmt: skip
#: Ops that read only the dims of their input, never its values.
SHAPE_ONLY = frozenset({"Shape", "Size"})
#: Float inputs the spec requires to stay float32 (Resize's roi and scales).
FLOAT32_ONLY = {"Resize": {1, 2}}
_HALF_MAX = float(np.finfo(np.float16).max)


def to_half(weights: Weights, names: Names) -> int:
    """Convert in place (the float32 constants left unread: ``Weights.drop_unused``); the number
    of ops that now run in float16."""
    graph = weights.graph
    types = _element_types(weights)
    dtype = {i.name: FLOAT for i in graph.input if types.get(i.name) == FLOAT and not weights.is_constant(i.name)}
    active = set(dtype)  # tensors computed from the float inputs' values
    converted: dict[tuple[str, int], str] = {}  # (tensor, dtype) -> the name of that version
    nodes: list[onnx.NodeProto] = []
    half_ops = 0

    def version(name: str, want: int) -> str:
        """``name`` as ``want``: a converted constant, or a Cast of a computed tensor."""
        if (name, want) in converted:
            return converted[name, want]
        if weights.is_constant(name):
            values = weights.array(name).astype(np.float32)
            if want == HALF:
                values = np.clip(values, -_HALF_MAX, _HALF_MAX).astype(np.float16)
            made = weights.add(names(f"{name}/fp16" if want == HALF else f"{name}/fp32"), values)
        else:
            made = names(f"{name}/fp16" if want == HALF else f"{name}/fp32")
            nodes.append(helper.make_node("Cast", [name], [made], to=want, name=names(f"{made}/cast")))
        converted[name, want] = made
        return made

    feeds_matmul = {name for node in graph.node if node.op_type == "MatMul" for name in node.input}
    for node in graph.node:
        carries = node.op_type not in SHAPE_ONLY and any(name in active for name in node.input)
        if not carries:
            nodes.append(node)
            continue
        # onnxruntime 1.31's CPU provider crashes (SIGSEGV) creating a session with a float16
        # Transpose feeding a MatMul (its MatmulTransposeFusion with NchwcTransformer): such a
        # Transpose stays in float32, so that a Cast stands between the two.
        transposes_for_matmul = node.op_type == "Transpose" and node.output[0] in feeds_matmul
        want = FLOAT if node.op_type in KEEP_FP32 or transposes_for_matmul else HALF
        exempt = FLOAT32_ONLY.get(node.op_type, set())
        for index, name in enumerate(node.input):
            if not name or index in exempt or node.op_type == "Cast":  # a Cast reads any type
                continue
            current = dtype.get(name, types.get(name))
            if current in (FLOAT, HALF) and current != want:
                node.input[index] = version(name, want)
        if node.op_type == "Cast" and node.attribute[0].i == FLOAT:
            node.attribute[0].i = want
        for name in node.output:
            if types.get(name) == FLOAT or (node.op_type == "Cast" and types.get(name) in (FLOAT, HALF)):
                dtype[name] = want
                active.add(name)
        half_ops += want == HALF
        nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    _restore_float_outputs(graph, dtype, names)
    del graph.value_info[:]  # the float types recorded there no longer hold
    return half_ops


def _restore_float_outputs(graph: onnx.GraphProto, dtype: dict[str, int], names: Names) -> None:
    """Graph outputs now float16 are computed under a new name and cast back to float32."""
    for output in graph.output:
        if dtype.get(output.name) != HALF:
            continue
        inner = names(f"{output.name}/fp16")
        for node in graph.node:
            node.input[:] = [inner if name == output.name else name for name in node.input]
            node.output[:] = [inner if name == output.name else name for name in node.output]
        graph.node.append(
            helper.make_node("Cast", [inner], [output.name], to=FLOAT, name=names(f"{output.name}/to_fp32"))
        )


def _element_types(weights: Weights) -> dict[str, int]:
    """The element type of every tensor, from ONNX type inference on the weightless graph."""
    model = checkable(weights.model.proto)
    try:
        with memory_budget(INFERENCE_BUDGET):
            inferred = onnx.shape_inference.infer_shapes(model, check_type=False, strict_mode=False)
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - reported as one line below
        raise UnrepairableError(f"fp16: ONNX type inference fails on this graph: {exc}") from None
    graph = inferred.graph
    types = {info.name: info.type.tensor_type.elem_type for info in (*graph.input, *graph.value_info, *graph.output)}
    types.update({t.name: t.data_type for t in graph.initializer})
    types.update({t.name: t.data_type for t in weights.graph.initializer})
    for node in weights.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            types[node.output[0]] = node.attribute[0].t.data_type
    unknown = Counter(
        node.op_type for node in weights.graph.node for name in node.output if name and not types.get(name)
    )
    if unknown:
        listed = ", ".join(f"{op} x{n}" for op, n in unknown.most_common(5))
        raise UnrepairableError(
            f"fp16: ONNX type inference leaves outputs untyped ({listed}); cannot tell which are float"
        )
    return types
