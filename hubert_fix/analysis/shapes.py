"""Weight-free ONNX shape inference, in a child process and within a memory budget.

The graph is copied without its large weights (shape-only inputs instead), inferred with
``data_prop=True`` in a forked child (an assertion in ONNX's C++ aborts the child, not us),
and re-inferred with Reshape rank hints where ONNX gave up on a computed shape vector.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx_graphsurgeon.exporters.onnx_exporter import OnnxExporter, dtype_to_onnx

from hubert_fix.analysis.contrib import standard
from hubert_fix.analysis.graph import SMALL_CONSTANT
from hubert_fix.onnxio.isolation import ChildError, in_child

logger = logging.getLogger(__name__)

#: A dimension: a static size or a symbol (model-declared ``dim_param`` or ONNX's ``unk__N``).
Dim = int | str


def _value_info(name: str, dtype: object, shape: object) -> onnx.ValueInfoProto:
    elem = dtype_to_onnx(dtype) if dtype is not None else onnx.TensorProto.UNDEFINED
    return onnx.helper.make_tensor_value_info(name, elem, list(shape) if shape is not None else None)


def _inference_model(graph: gs.Graph) -> onnx.ModelProto:
    """A copy of ``graph`` for shape inference that does not copy large weights.

    Large initializers and large Constant nodes become graph inputs that carry only
    dtype and shape; small ones stay inline because inference needs their values.
    """
    nodes: list[onnx.NodeProto] = []
    inputs = [_value_info(t.name, t.dtype, t.shape) for t in graph.inputs]
    initializers: list[onnx.TensorProto] = []
    seen: set[str] = {t.name for t in graph.inputs}
    for node in graph.nodes:
        value = node.attrs.get("value") if node.op == "Constant" else None
        if isinstance(value, gs.Constant) and int(np.prod(value.shape, dtype=np.int64)) > SMALL_CONSTANT:
            inputs.append(_value_info(node.outputs[0].name, value.dtype, value.shape))
            seen.add(node.outputs[0].name)
            continue
        nodes.extend(_exported(node))
        for tensor in node.inputs:
            if not isinstance(tensor, gs.Constant) or tensor.name in seen:
                continue
            seen.add(tensor.name)
            if int(np.prod(tensor.shape, dtype=np.int64)) > SMALL_CONSTANT:
                inputs.append(_value_info(tensor.name, tensor.dtype, tensor.shape))
            else:
                initializers.append(OnnxExporter.export_tensor_proto(tensor))
    # outputs without their declared shapes: a declaration is a claim (see ``dims``), and ONNX
    # inference would take it as given, its rank included
    outputs = [_value_info(t.name, t.dtype, None) for t in graph.outputs]
    onnx_graph = onnx.helper.make_graph(nodes, graph.name or "graph", inputs, outputs, initializers)
    opsets = list(graph.import_domains or [onnx.helper.make_opsetid("", graph.opset)])
    known = {o.domain for o in opsets}
    for domain in sorted({n.domain for n in graph.nodes if n.domain} - known):
        opsets.append(onnx.helper.make_opsetid(domain, 1))
    return onnx.helper.make_model(onnx_graph, opset_imports=opsets, ir_version=8)


def _exported(node: gs.Node) -> list[onnx.NodeProto]:
    """``node`` for the inference copy: a contrib op of ONNX Runtime as the standard op with its
    shape rule (``contrib``), one per output that rule covers; any other node as it is."""
    rule = standard(node)
    if rule is None:
        return [OnnxExporter.export_node(node)]
    inputs = [node.inputs[i].name if i < len(node.inputs) else "" for i in rule.inputs]
    while inputs and not inputs[-1]:
        inputs.pop()  # optional inputs left out
    attrs = {key: node.attrs[key] for key in rule.attrs if key in node.attrs}
    return [
        onnx.helper.make_node(rule.op, inputs, [node.outputs[o].name], name=f"{node.name}/{rule.op}{o}", **attrs)
        for o in rule.outputs
        if o < len(node.outputs) and node.outputs[o].name
    ]


#: How often inference is re-run with Reshape hints (each round can unblock a chain).
HINT_ROUNDS = 8

#: Address space ONNX shape inference may add to the process. Data propagation
#: materialises small shape tensors; a damaged shape value (one flipped byte in a
#: ConstantOfShape's input) would make it allocate without end. Real graphs need a few MB.
INFERENCE_BUDGET = 1 << 30


@contextlib.contextmanager
def memory_budget(extra: int) -> Iterator[None]:
    """Limit the process's address space to its current size plus ``extra`` bytes.

    An allocation past it fails (``MemoryError``) instead of taking the machine down.
    Linux only (elsewhere, and where the size cannot be read, no limit is set); a
    stricter limit already in force is kept; the previous limit is restored afterwards.
    """
    try:
        import resource

        with open("/proc/self/statm") as statm:
            current = int(statm.read().split()[0]) * resource.getpagesize()
    except (ImportError, OSError, ValueError):
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = current + extra
    if soft != resource.RLIM_INFINITY:
        limit = min(limit, soft)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def inferred_shapes(graph: gs.Graph) -> dict[str, tuple[Dim | None, ...] | None]:
    """Tensor name -> dims from ONNX shape inference (None per dim when unknown).

    ONNX inference sometimes gives up on a Reshape whose shape vector is computed (seen
    at opset 13 on ``Reshape(x, Shape(y))`` in fairseq's GroupNorm), and then knows no
    rank for anything downstream. The rank of a Reshape's output is the static length
    of its shape vector, so such outputs get a hint (the dims of ``y`` for
    ``Shape(y)``, else fresh symbols) and inference is run again from there.
    """
    model = _inference_model(graph)
    shapes: dict[str, tuple[Dim | None, ...] | None] = {}
    for _ in range(HINT_ROUNDS):
        try:
            key = b"onnx shape inference\0" + model.SerializeToString()
            inferred = onnx.ModelProto.FromString(in_child(lambda: _infer(model), key=key))
        except ChildError as err:
            if err.kind == "MemoryError":
                raise MemoryError from None  # a damaged or hostile shape value: the caller refuses the file
            logger.warning("ONNX shape inference failed (%s); using declared shapes only", err)
            return shapes  # inference is best effort; the walk still works
        shapes, types = _read_shapes(inferred.graph)
        hints = _reshape_hints(list(model.graph.node), shapes, types)
        if not hints:
            break
        model.graph.value_info.extend(hints)
    return shapes


def _infer(model: onnx.ModelProto) -> bytes:
    """ONNX shape inference (C++: an assertion in it aborts, so ``in_child`` runs this)."""
    with memory_budget(INFERENCE_BUDGET):
        return onnx.shape_inference.infer_shapes(
            model, check_type=False, strict_mode=False, data_prop=True
        ).SerializeToString()


def _read_shapes(g: onnx.GraphProto) -> tuple[dict[str, tuple[Dim | None, ...] | None], dict[str, int]]:
    """Dims and element types of every tensor ONNX inference annotated."""
    shapes: dict[str, tuple[Dim | None, ...] | None] = {}
    types: dict[str, int] = {}
    for info in [*g.input, *g.value_info, *g.output]:
        ttype = info.type.tensor_type
        types[info.name] = ttype.elem_type
        if not ttype.HasField("shape"):
            shapes.setdefault(info.name, None)
            continue
        dims: list[Dim | None] = []
        for d in ttype.shape.dim:
            if d.HasField("dim_value"):
                dims.append(int(d.dim_value))
            elif d.HasField("dim_param"):
                dims.append(d.dim_param)
            else:
                dims.append(None)
        shapes[info.name] = tuple(dims)
    return shapes, types


def _reshape_hints(
    nodes: list[onnx.NodeProto],
    shapes: dict[str, tuple[Dim | None, ...] | None],
    types: dict[str, int],
) -> list[onnx.ValueInfoProto]:
    """Shapes for Reshape outputs that inference left without a rank (see above)."""
    producers = {out: node for node in nodes for out in node.output}
    hints = []
    for node in nodes:
        if node.op_type != "Reshape" or shapes.get(node.output[0]) is not None:
            continue
        vector = shapes.get(node.input[1])
        if vector is None or len(vector) != 1 or not isinstance(vector[0], int):
            continue
        rank = vector[0]
        source = producers.get(node.input[1])
        dims: list[Dim | None] = [f"{node.output[0]}[{i}]" for i in range(rank)]
        if source is not None and source.op_type == "Shape" and not source.attribute:
            copied = shapes.get(source.input[0])
            if copied is not None and len(copied) == rank:
                dims = [d if d is not None else dims[i] for i, d in enumerate(copied)]
        elem = types.get(node.input[0], onnx.TensorProto.UNDEFINED)
        hints.append(onnx.helper.make_tensor_value_info(node.output[0], elem, dims))
    return hints
