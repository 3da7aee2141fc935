"""Damage that neither the protobuf parser nor onnx.checker rejects, found before any step trusts it."""

from __future__ import annotations

import onnx

from hubert_fix.onnxio import skeleton


def first_invalid_text(model: onnx.ModelProto) -> str | None:
    """Where a name is not valid UTF-8 (protobuf then hands out bytes, not str).

    Neither the parser nor onnx.checker rejects that, but every later step that writes
    the name back would fail, so a bit flip in a name (a tensor's, a symbolic dim's, in
    the graph or in a subgraph) is reported here, as input damage.
    """
    named = [("metadata", text) for p in model.metadata_props for text in (p.key, p.value)]
    graphs = [model.graph]
    while graphs:
        graph = graphs.pop()
        infos = [*graph.input, *graph.output, *graph.value_info]
        named += [("tensor name", info.name) for info in infos]
        named += [
            ("symbolic dim", d.dim_param)
            for info in infos if info.type.HasField("tensor_type") for d in info.type.tensor_type.shape.dim
        ]  # fmt: skip
        named += [("initializer name", t.name) for t in graph.initializer]
        for node in graph.node:
            named += [("node name", node.name), ("op type", node.op_type), ("domain", node.domain)]
            named += [("tensor name", name) for name in [*node.input, *node.output]]
            named += [("attribute name", a.name) for a in node.attribute]
            for text in [a.s for a in node.attribute if a.HasField("s")] + [
                t for a in node.attribute for t in a.strings
            ]:
                try:
                    text.decode("utf-8")  # string attributes are bytes in protobuf; a mode, a direction
                except UnicodeDecodeError:
                    named.append(("string attribute", text))
            graphs += [a.g for a in node.attribute if a.HasField("g")] + [g for a in node.attribute for g in a.graphs]
    for what, text in named:
        if isinstance(text, bytes):
            return f"a {what} ({text[:40]!r})"
    return None


_DATA_TYPES = frozenset(onnx.TensorProto.DataType.values())
_INTS = (onnx.TensorProto.INT64, onnx.TensorProto.INT32)
#: No tensor has more elements than this along one axis; larger ints in a small constant
#: are damage, except the sentinels exporters write for "to the end" (|v| >= 2**62).
_ABSURD_INT = 1 << 40


def first_damaged_value(graph: onnx.GraphProto) -> str | None:
    """A field the parser and onnx.checker let through that no model can mean.

    An unknown element type (one flipped byte in ``data_type``) breaks every later step;
    an absurd integer in a small constant (a shape, an axis) makes shape inference try to
    materialise a tensor of that size. Both are refused here, before any work.
    """
    tensors = [(f"initializer {t.name}", t) for t in graph.initializer]
    for node in graph.node:
        for attr in node.attribute:
            label = f"{node.op_type} node {node.name or '(unnamed)'}"
            tensors += [(label, attr.t)] if attr.HasField("t") else []
            tensors += [(label, t) for t in attr.tensors]
            for sub in [attr.g, *attr.graphs] if attr.HasField("g") or attr.graphs else []:
                found = first_damaged_value(sub)
                if found:
                    return found
    seen: set[str] = set()
    for tensor in graph.initializer:
        if tensor.name in seen:  # onnx.checker lets it through; which of the two would a runtime take?
            return f"initializer {tensor.name} is defined twice"
        seen.add(tensor.name)
    if graph.sparse_initializer:
        return f"sparse initializer {graph.sparse_initializer[0].values.name or '(unnamed)'}: not supported"
    for label, tensor in tensors:
        if tensor.data_type not in _DATA_TYPES or tensor.data_type == onnx.TensorProto.UNDEFINED:
            return f"{label} has element type {tensor.data_type}, which ONNX does not define"
        if tensor.data_location != onnx.TensorProto.EXTERNAL and tensor.HasField("raw_data"):
            expected = skeleton.nbytes(tensor)
            if expected is not None and expected != len(tensor.raw_data):
                return f"{label} holds {len(tensor.raw_data)} bytes where its type and shape need {expected}"
        held, needed = _typed_values(tensor)
        if held and held != needed:
            return f"{label} holds {held} values where its shape needs {needed}"
        if tensor.data_type in _INTS and tensor.data_location != onnx.TensorProto.EXTERNAL and len(tensor.dims) <= 1:
            values = onnx.numpy_helper.to_array(tensor).reshape(-1) if _size(tensor) <= 64 else ()
            absurd = [int(v) for v in values if _ABSURD_INT < abs(int(v)) < 1 << 62]
            if absurd:
                return f"{label} holds the integer {absurd[0]}, larger than any tensor dimension"
    for info in [*graph.input, *graph.output, *graph.value_info]:
        elem = info.type.tensor_type.elem_type if info.type.HasField("tensor_type") else 0
        if elem not in _DATA_TYPES:
            return f"value {info.name} has element type {elem}, which ONNX does not define"
    return None


#: Element types whose typed field holds two numbers per element; sub-byte types (packed) are left out.
_PAIRS = {onnx.TensorProto.COMPLEX64, onnx.TensorProto.COMPLEX128}
_PACKED = {
    getattr(onnx.TensorProto, name)
    for name in ("UINT4", "INT4", "FLOAT4E2M1", "UINT2", "INT2", "FLOAT6E2M3", "FLOAT6E3M2")
    if hasattr(onnx.TensorProto, name)
}


def _typed_values(tensor: onnx.TensorProto) -> tuple[int, int]:
    """How many numbers a tensor stored in its typed field (``int64_data``, ...) holds, and how many its
    shape needs; (0, 0) where its values are raw, external or packed below a byte."""
    if tensor.data_location == onnx.TensorProto.EXTERNAL or tensor.HasField("raw_data") or tensor.data_type in _PACKED:
        return 0, 0
    held = len(getattr(tensor, onnx.helper.tensor_dtype_to_field(tensor.data_type)))
    return held, _size(tensor) * (2 if tensor.data_type in _PAIRS else 1)


def _size(tensor: onnx.TensorProto) -> int:
    count = 1
    for dim in tensor.dims:
        count *= max(int(dim), 0)
    return count
