"""Symbolic dimension facts: which dims of which tensors are *proven* equal.

The passes decide on proven facts only. ONNX shape inference alone is not enough:
a Slice with dynamic ends (HuBERT's ``padding_mask[:, :-extra]``) makes it invent a
fresh ``unk__N`` symbol for every dim of its output, so the Where condition built
from the mask looks like ``[unk__8, unk__7]`` although its first axis is ``batch``.
:func:`analyze` therefore combines two sources:

* the dims ONNX shape inference (``data_prop=True``) gives each tensor, used as is
  when they are static or symbolic (a model-declared ``dim_param`` such as ``batch``
  is equal to itself everywhere; an invented ``unk__N`` only to the same ``unk__N``);
* a *provenance walk* from ``(tensor, axis)`` back through ops that provably carry
  that axis unchanged (elementwise ops, Transpose, Reduce*, Slice on other axes,
  Squeeze/Unsqueeze, Reshape whose shape vector is traced from ``Shape``, ...). Two
  dims whose walks end at the same root are equal. The walk stops at any op it does
  not know, so an unknown op can only make *fewer* dims equal, never more.

The graph is never modified: inference runs on a separate, weight-free export.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx_graphsurgeon.exporters.onnx_exporter import OnnxExporter, dtype_to_onnx

from hubert_fix.isolation import ChildError, in_child

logger = logging.getLogger(__name__)

#: A dimension: a static size or a symbol (model-declared ``dim_param`` or ONNX's ``unk__N``).
Dim = int | str

#: Where a provenance walk ends: a static size, a model-declared symbol, or the
#: ``(tensor name, axis)`` at which the walk had to stop.
Root = int | str | tuple[str, int]

#: Constants up to this many elements stay inline in the inference copy, because
#: Reshape/Slice/Unsqueeze/Reduce need their *values*; larger ones become shape-only inputs.
SMALL_CONSTANT = 64

# Ops whose output 0 has the shape of input 0, axis for axis.
_SAME_SHAPE_OPS = frozenset(
    {
        "Abs", "BatchNormalization", "Cast", "CastLike", "Ceil", "Celu", "Clip", "Cos",
        "Dropout", "Elu", "Erf", "Exp", "Floor", "Gelu", "HardSigmoid", "HardSwish",
        "Identity", "InstanceNormalization", "IsInf", "IsNaN", "LayerNormalization",
        "LeakyRelu", "Log", "LogSoftmax", "LpNormalization", "Mish", "Neg", "Not",
        "PRelu", "Reciprocal", "Relu", "Round", "Selu", "Sigmoid", "Sign", "Sin",
        "Softmax", "Softplus", "Softsign", "Sqrt", "Tanh", "ThresholdedRelu",
        "CumSum", "ScatterND", "ScatterElements",
    }
)  # fmt: skip

# Multidirectional (numpy-style) broadcasting ops: every input takes part.
_BROADCAST_OPS = frozenset(
    {
        "Add", "And", "BitShift", "Div", "Equal", "Greater", "GreaterOrEqual", "Less",
        "LessOrEqual", "Max", "Mean", "Min", "Mod", "Mul", "Or", "Pow", "Sub", "Sum",
        "Where", "Xor",
    }
)  # fmt: skip

_REDUCE_OPS = frozenset(
    {
        "ArgMax", "ArgMin", "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp",
        "ReduceMax", "ReduceMean", "ReduceMin", "ReduceProd", "ReduceSum",
        "ReduceSumSquare",
    }
)  # fmt: skip

_POOL_OPS = frozenset({"Conv", "ConvTranspose", "MaxPool", "AveragePool", "LpPool"})


# --------------------------------------------------------------------------- helpers


def producer(tensor: gs.Tensor) -> gs.Node | None:
    """The node that produces ``tensor`` (None for graph inputs and initializers)."""
    return tensor.inputs[0] if isinstance(tensor, gs.Variable) and tensor.inputs else None


#: Ops that keep a scalar's value (only its type or shape changes).
VALUE_KEEPING = ("Cast", "Unsqueeze", "Squeeze", "Reshape", "Identity")


def unwrapped(tensor: gs.Tensor) -> gs.Tensor:
    """The tensor whose value ``tensor`` carries, through value-keeping ops (Cast, Unsqueeze, ...)."""
    node = producer(tensor)
    while node is not None and node.op in VALUE_KEEPING:
        tensor = node.inputs[0]
        node = producer(tensor)
    return tensor


def const_value(tensor: gs.Tensor | None, limit: int = SMALL_CONSTANT) -> np.ndarray | None:
    """The value of a small constant tensor (an initializer or a Constant node's output).

    Returns None when the value is not a compile-time constant, has more than ``limit``
    elements (large weights are never loaded just to be looked at) or is an external-data
    stub (its bytes are in a file beside the model, not in memory; onnx would resolve its
    location against the working directory).
    """
    if tensor is None:
        return None
    if isinstance(tensor, gs.Constant):
        lazy = tensor._values  # noqa: SLF001 - graphsurgeon keeps the TensorProto until the values are read
        stub = isinstance(lazy, gs.ir.tensor.LazyValues) and lazy.tensor.data_location == onnx.TensorProto.EXTERNAL
        if stub or int(np.prod(tensor.shape, dtype=np.int64)) > limit:
            return None
        return np.asarray(tensor.values)
    node = producer(tensor)
    if node is None or node.op != "Constant":
        return None
    for key in ("value", "value_int", "value_ints", "value_float", "value_floats"):
        if key in node.attrs:
            value = node.attrs[key]
            if isinstance(value, gs.Constant):
                return const_value(value, limit)
            return np.asarray(value)
    return None


def int_list(tensor: gs.Tensor | None) -> list[int] | None:
    """A small constant as a flat list of ints, or None."""
    value = const_value(tensor)
    if value is None or value.dtype.kind not in "iu":
        return None
    return [int(v) for v in value.reshape(-1)]


def _input(node: gs.Node, index: int) -> gs.Tensor | None:
    """Input ``index`` of ``node``; None when absent or given as the empty name."""
    if index >= len(node.inputs):
        return None
    tensor = node.inputs[index]
    return None if tensor.name == "" else tensor


def node_axes(node: gs.Node, input_index: int, attr: str = "axes") -> list[int] | None:
    """Axes given either as an attribute (old opsets) or as a constant input (new ones)."""
    if attr in node.attrs:
        value = node.attrs[attr]
        return [int(v) for v in np.asarray(value).reshape(-1)]
    return int_list(_input(node, input_index))


# --------------------------------------------------------------- weight-free inference


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
        nodes.append(OnnxExporter.export_node(node))
        for tensor in node.inputs:
            if not isinstance(tensor, gs.Constant) or tensor.name in seen:
                continue
            seen.add(tensor.name)
            if int(np.prod(tensor.shape, dtype=np.int64)) > SMALL_CONSTANT:
                inputs.append(_value_info(tensor.name, tensor.dtype, tensor.shape))
            else:
                initializers.append(OnnxExporter.export_tensor_proto(tensor))
    outputs = [_value_info(t.name, t.dtype, t.shape) for t in graph.outputs]
    onnx_graph = onnx.helper.make_graph(nodes, graph.name or "graph", inputs, outputs, initializers)
    opsets = list(graph.import_domains or [onnx.helper.make_opsetid("", graph.opset)])
    known = {o.domain for o in opsets}
    for domain in sorted({n.domain for n in graph.nodes if n.domain} - known):
        opsets.append(onnx.helper.make_opsetid(domain, 1))
    return onnx.helper.make_model(onnx_graph, opset_imports=opsets, ir_version=8)


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


def _inferred_shapes(graph: gs.Graph) -> dict[str, tuple[Dim | None, ...] | None]:
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
            inferred = onnx.ModelProto.FromString(in_child(lambda: _infer(model)))
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
        return onnx.shape_inference.infer_shapes(model, check_type=False, strict_mode=False, data_prop=True).SerializeToString()


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


# ------------------------------------------------------------------------ the facts


@dataclass
class GraphFacts:
    """Shapes of a graph's tensors and a provenance walk to prove dims equal."""

    graph: gs.Graph
    inferred: dict[str, tuple[Dim | None, ...] | None]
    declared: frozenset[str]  # dim_params named by the model's inputs/outputs
    _roots: dict[tuple[str, int], Root] = field(default_factory=dict, repr=False)
    _active: set[tuple[str, int]] = field(default_factory=set, repr=False)

    # ---- public interface

    def shape(self, tensor: gs.Tensor) -> tuple[Dim, ...] | None:
        """The dims of ``tensor`` (None when its rank is unknown).

        A dim the walk proves static or model-declared is shown that way even where
        inference lost it; the others keep ONNX's symbol or a label naming their root.
        """
        raw = self._raw_shape(tensor)
        if raw is None:
            return None
        return tuple(self._label(tensor, axis, d) for axis, d in enumerate(raw))

    def rank(self, tensor: gs.Tensor) -> int | None:
        raw = self._raw_shape(tensor)
        return None if raw is None else len(raw)

    def dtype(self, tensor: gs.Tensor) -> np.dtype | None:
        """The element type when gs knows it (declared, constant or set by the exporter)."""
        dtype = getattr(tensor, "dtype", None)
        if dtype is None:
            return None
        try:
            return np.dtype(dtype)
        except TypeError:
            return None

    def same_dim(self, a: gs.Tensor, axis_a: int, b: gs.Tensor, axis_b: int) -> bool:
        """True only when ``a.shape[axis_a] == b.shape[axis_b]`` is proven for every input."""
        da, db = self._raw_dim(a, axis_a), self._raw_dim(b, axis_b)
        if da is not None and da == db:
            return True  # equal static sizes, or the very same symbol
        ra, rb = self.root(a, axis_a), self.root(b, axis_b)
        return ra is not None and ra == rb

    def value_is_dim(self, scalar: gs.Tensor, tensor: gs.Tensor, axis: int) -> bool:
        """True when the one-element integer ``scalar`` is proven to equal ``tensor.shape[axis]``.

        ``scalar`` must be traced to a shape element (``Gather(Shape(T), k)``, a
        ``Shape(T, start, end)`` slice, through Cast/Squeeze/...) of a dim proven equal.
        """
        step = _scalar_element(self, scalar)
        if isinstance(step, int):
            return self._raw_dim(tensor, axis) == step
        return step is not None and self.same_dim(step[0], step[1], tensor, axis)

    def scalar_dim(self, scalar: gs.Tensor) -> Dim | None:
        """The dim a one-element integer is traced to (``Gather(Shape(T), k)``, ...): its
        static size, or its symbol; None when it is not a shape element."""
        step = _scalar_element(self, scalar)
        if step is None and _vector_length(self, scalar) == 1:
            step = shape_element(self, scalar, 0)
        if isinstance(step, int) or step is None:
            return step
        return self.shape(step[0])[step[1]] if self.shape(step[0]) is not None else None

    def is_one(self, tensor: gs.Tensor, axis: int) -> bool:
        """True when the dim is proven to be 1 (broadcast-neutral)."""
        return self._raw_dim(tensor, axis) == 1 or self.root(tensor, axis) == 1

    def describe(self, tensor: gs.Tensor) -> str:
        """The shape for reports, e.g. ``[batch, unk__7, 32]`` (``[?]`` for unknown rank)."""
        dims = self.shape(tensor)
        return "[?]" if dims is None else "[" + ", ".join(str(d) for d in dims) + "]"

    def dim_str(self, tensor: gs.Tensor, axis: int) -> str:
        dims = self.shape(tensor)
        return "?" if dims is None or not -len(dims) <= axis < len(dims) else str(dims[axis])

    # ---- the provenance walk

    def root(self, tensor: gs.Tensor, axis: int) -> Root | None:
        """Where ``tensor``'s ``axis`` comes from (memoised); None when the rank is unknown."""
        rank = self.rank(tensor)
        if rank is None or not -rank <= axis < rank:
            return None
        key = (tensor.name, axis % rank)
        if key not in self._roots:
            if key in self._active:  # a cycle cannot happen in a valid graph; stay safe
                return key
            self._active.add(key)
            try:
                self._roots[key] = self._walk(tensor, axis % rank)
            finally:
                self._active.discard(key)
        return self._roots[key]

    def _walk(self, tensor: gs.Tensor, axis: int) -> Root:
        """Follow ``(tensor, axis)`` back while each step provably keeps the dim."""
        while True:
            known = self._raw_dim(tensor, axis)
            if isinstance(known, int):
                return known
            step = _step(self, tensor, axis)
            if step is None:
                # A model-declared symbol is its own root; walking on (when possible)
                # lets an output's name (e.g. "frames") meet the input it comes from.
                return known if isinstance(known, str) and known in self.declared else (tensor.name, axis)
            if not isinstance(step, tuple):
                return step
            tensor, axis = step
            rank = self.rank(tensor)
            if rank is None or not -rank <= axis < rank:  # attributes that contradict the shapes: stop
                return (tensor.name, axis)
            axis %= rank

    # ---- internals

    def _raw_shape(self, tensor: gs.Tensor) -> tuple[Dim | None, ...] | None:
        if isinstance(tensor, gs.Constant):
            return tuple(int(d) for d in tensor.shape)
        shape = self.inferred.get(tensor.name)
        if shape is None and tensor.shape is not None:
            shape = tuple(d if isinstance(d, (int, str)) else None for d in tensor.shape)
        return shape

    def _raw_dim(self, tensor: gs.Tensor, axis: int) -> Dim | None:
        shape = self._raw_shape(tensor)
        if shape is None or not -len(shape) <= axis < len(shape):
            return None
        return shape[axis]

    def _label(self, tensor: gs.Tensor, axis: int, raw: Dim | None) -> Dim:
        if isinstance(raw, int) or (isinstance(raw, str) and raw in self.declared):
            return raw
        root = self.root(tensor, axis)
        if isinstance(root, (int, str)):
            return root
        if isinstance(raw, str):
            return raw
        if root is not None:
            root_raw = self.inferred.get(root[0])
            if root_raw is not None and isinstance(root_raw[root[1]], str):
                return root_raw[root[1]]
            return f"{root[0]}[{root[1]}]"
        return "?"


def analyze(graph: gs.Graph) -> GraphFacts:
    """Facts about ``graph`` as it is now; call again after editing it."""
    declared: set[str] = set()
    for tensor in [*graph.inputs, *graph.outputs]:
        for d in tensor.shape or ():
            if isinstance(d, str) and d:
                declared.add(d)
    return GraphFacts(graph=graph, inferred=_inferred_shapes(graph), declared=frozenset(declared))


# ------------------------------------------------------------------- one walk step

Step = tuple[gs.Tensor, int] | int | str | None


def _step(facts: GraphFacts, tensor: gs.Tensor, axis: int) -> Step:
    """One step back: the ``(input, axis)`` that ``(tensor, axis)`` provably equals.

    May also return a root directly (a static size or a declared symbol), or None
    when no step is proven (unknown op, dynamic axes, ...), which ends the walk.
    """
    node = producer(tensor)
    if node is None:
        return None
    out_index = next(i for i, t in enumerate(node.outputs) if t is tensor)
    op = node.op
    first = _input(node, 0)
    if first is None:
        return None
    if op in _SAME_SHAPE_OPS:
        return (first, axis) if out_index == 0 else None
    if op in _BROADCAST_OPS:
        return _broadcast_step(facts, node, tensor, axis)
    if op == "Concat":
        # Concat requires equal dims on every axis but the concatenation axis.
        rank = facts.rank(tensor)
        cat = int(node.attrs.get("axis", 0))
        return None if rank is None or cat % rank == axis else (first, axis)
    if op == "Transpose":
        rank = facts.rank(tensor)
        if rank is None:
            return None
        perm = node.attrs.get("perm") or list(range(rank))[::-1]
        return (first, int(perm[axis])) if len(perm) == rank and 0 <= axis < rank else None
    if op in _REDUCE_OPS:
        return _reduce_step(facts, node, axis)
    if op == "Slice":
        return _slice_step(facts, node, axis)
    if op == "ConstantOfShape":
        return shape_element(facts, first, axis)
    if op == "Unsqueeze":
        rank = facts.rank(tensor)
        axes = node_axes(node, 1)
        if rank is None or axes is None:
            return None
        axes = sorted(a % rank for a in axes)
        if axis in axes:
            return 1
        return (first, axis - sum(1 for a in axes if a < axis))
    if op == "Squeeze":
        in_rank = facts.rank(first)
        axes = node_axes(node, 1)
        if in_rank is None or not axes:
            return None
        kept = [i for i in range(in_rank) if i not in {a % in_rank for a in axes}]
        return (first, kept[axis]) if axis < len(kept) else None
    if op == "Reshape":
        element = shape_element(facts, _input(node, 1), axis)
        if element == 0 and not node.attrs.get("allowzero", 0):
            return (first, axis)
        if isinstance(element, int):
            return element if element > 0 else None
        return element
    if op == "Tile":
        # out.shape[i] == in.shape[i] * repeats[i]: the dim is kept where repeats[i] is 1
        return (first, axis) if shape_element(facts, _input(node, 1), axis) == 1 else None
    if op == "Expand":
        return _expand_step(facts, node, tensor, axis)
    if op == "Pad":  # the dim is kept where the pads of this axis are both 0 (torch's F.pad of another axis)
        rank = facts.rank(tensor)
        pads = _element_array(facts, _input(node, 1))
        if rank is None or pads is None or pads.size != 2 * rank or _input(node, 3) is not None:
            return None
        return (first, axis) if pads[axis] == 0 and pads[axis + rank] == 0 else None
    if op == "Range":  # Range(0, n, 1) has n elements (torchaudio's arange(T) for its length mask)
        start, delta = int_list(_input(node, 0)), int_list(_input(node, 2))
        return _scalar_element(facts, node.inputs[1]) if start == [0] and delta == [1] and len(node.inputs) == 3 else None
    if op in _POOL_OPS:
        return (first, 0) if axis == 0 and out_index == 0 else None
    if op == "MatMul":
        return _matmul_step(facts, node, tensor, axis)
    return None


def _broadcast_step(facts: GraphFacts, node: gs.Node, tensor: gs.Tensor, axis: int) -> Step:
    """Through a broadcasting op, when every other operand is 1 there or the same dim."""
    out_rank = facts.rank(tensor)
    operands = [t for t in node.inputs if t.name != ""]
    ranks = [facts.rank(t) for t in operands]
    if out_rank is None or any(r is None for r in ranks):
        return None
    carriers: list[tuple[gs.Tensor, int]] = []
    for operand, rank in zip(operands, ranks):
        op_axis = axis - (out_rank - rank)
        if op_axis < 0 or facts.is_one(operand, op_axis):
            continue  # broadcast-neutral on this axis
        carriers.append((operand, op_axis))
    if not carriers:
        return 1
    roots = {facts.root(t, a) for t, a in carriers}
    if len(roots) == 1 and None not in roots:
        return carriers[0]
    return None


def _expand_step(facts: GraphFacts, node: gs.Node, tensor: gs.Tensor, axis: int) -> Step:
    """Expand broadcasts its input against ``shape`` (right-aligned): where the shape
    vector says 1 (or is too short to reach the axis) the input's dim is kept."""
    first, vector = node.inputs[0], _input(node, 1)
    out_rank, in_rank = facts.rank(tensor), facts.rank(first)
    length = None if vector is None else _vector_length(facts, vector)
    if out_rank is None or in_rank is None or length is None:
        return None
    shape_axis, in_axis = axis - (out_rank - length), axis - (out_rank - in_rank)
    element = shape_element(facts, vector, shape_axis) if shape_axis >= 0 else 1
    if element == 1:
        return (first, in_axis) if in_axis >= 0 else 1
    if element is None or isinstance(element, int) and element <= 0:
        return None
    if in_axis < 0 or facts.is_one(first, in_axis):  # the shape vector's dim: expand(B, T) of a [T] range
        return element
    if isinstance(element, tuple) and facts.root(first, in_axis) == facts.root(*element):
        return (first, in_axis)
    return None


def _reduce_step(facts: GraphFacts, node: gs.Node, axis: int) -> Step:
    data = node.inputs[0]
    in_rank = facts.rank(data)
    if in_rank is None:
        return None
    keepdims = bool(node.attrs.get("keepdims", 1))
    if node.op in ("ArgMax", "ArgMin"):
        axes: list[int] | None = [int(node.attrs.get("axis", 0))]
    else:
        axes = node_axes(node, 1)
    if axes is None:
        if _input(node, 1) is not None:
            return None  # dynamic axes
        if node.attrs.get("noop_with_empty_axes", 0):
            return (data, axis)
        axes = list(range(in_rank))
    reduced = {a % in_rank for a in axes}
    if keepdims:
        return 1 if axis in reduced else (data, axis)
    kept = [i for i in range(in_rank) if i not in reduced]
    return (data, kept[axis]) if axis < len(kept) else None


def _slice_step(facts: GraphFacts, node: gs.Node, axis: int) -> Step:
    data = node.inputs[0]
    rank = facts.rank(data)
    if rank is None:
        return None
    if "starts" in node.attrs:  # opset < 10: everything is an attribute
        axes = node.attrs.get("axes") or list(range(len(node.attrs["starts"])))
    else:
        axes = int_list(_input(node, 3))
        if axes is None:
            if _input(node, 3) is not None:
                return None
            starts = _input(node, 1)
            length = None if starts is None else _vector_length(facts, starts)
            if length is None:
                return None
            axes = list(range(length))
    if axis not in {a % rank for a in axes}:
        return (data, axis)
    # a whole-axis reversal (x.flip(d): starts -1, ends <= -2**62, steps -1) keeps the length
    if "starts" not in node.attrs and len(axes) == 1:
        starts, ends, steps = (int_list(_input(node, i)) for i in (1, 2, 4))
        if starts == [-1] and ends is not None and ends[0] <= -(2**62) and steps == [-1]:
            return (data, axis)
    return None


def _matmul_step(facts: GraphFacts, node: gs.Node, tensor: gs.Tensor, axis: int) -> Step:
    a, b = node.inputs[0], node.inputs[1]
    ra, rb, r = facts.rank(a), facts.rank(b), facts.rank(tensor)
    if ra is None or rb is None or r is None or ra < 2:
        return None
    if axis == r - 1:
        return (b, rb - 1) if rb >= 2 else None
    if axis == r - 2:
        return (a, ra - 2)
    a_axis = axis - (r - ra)
    if rb <= 2:
        return (a, a_axis) if a_axis >= 0 else None
    b_axis = axis - (r - rb)
    if b_axis < 0 or facts.is_one(b, b_axis):
        return (a, a_axis) if a_axis >= 0 else None
    if a_axis >= 0 and facts.root(a, a_axis) == facts.root(b, b_axis):
        return (a, a_axis)
    return None


def shape_element(facts: GraphFacts, vector: gs.Tensor | None, index: int) -> Step:
    """Element ``index`` of a traced shape vector: an int, ``(tensor, axis)`` or None.

    Follows the exporter's idiom ``Concat(Unsqueeze(Gather(Shape(T), k)), [c], ...)``.
    """
    if vector is None:
        return None
    values = int_list(vector)
    if values is not None:
        return values[index] if index < len(values) else None
    node = producer(vector)
    if node is None:
        return None
    if node.op in ("Cast", "Identity"):
        return shape_element(facts, node.inputs[0], index)
    if node.op == "Reshape" and facts.rank(node.inputs[0]) == 1 and int_list(_input(node, 1)) == [-1]:
        return shape_element(facts, node.inputs[0], index)  # a vector flattened: the same elements
    if node.op == "Where" and _is_minus_one_test(facts, node.inputs[0], node.inputs[2]):
        # torch's expand(sizes): Where(sizes == -1, 1, sizes); a traced dim is never -1
        element = shape_element(facts, node.inputs[2], index)
        return element if isinstance(element, tuple) or isinstance(element, int) and element >= 0 else None
    if node.op == "ConstantOfShape":  # every element is the integer ``value`` (e.g. ones_like)
        fill = const_value(node.attrs.get("value"))
        length = _vector_length(facts, vector)
        if fill is None or fill.size != 1 or fill.dtype.kind not in "iu" or length is None or index >= length:
            return None
        return int(fill.reshape(-1)[0])
    if node.op == "Shape":
        source = node.inputs[0]
        rank = facts.rank(source)
        if rank is None:
            return None
        start, end = (int(node.attrs.get(key, default)) for key, default in (("start", 0), ("end", rank)))
        start, end = (min(max(v + rank if v < 0 else v, 0), rank) for v in (start, end))  # clamped, as ONNX does
        return (source, start + index) if start + index < end else None
    if node.op == "Concat":
        offset = index
        for part in node.inputs:
            length = _vector_length(facts, part)
            if length is None:
                return None
            if offset < length:
                return shape_element(facts, part, offset)
            offset -= length
        return None
    if node.op == "Unsqueeze" and index == 0 and facts.rank(node.inputs[0]) == 0:
        return _scalar_element(facts, node.inputs[0])
    if node.op == "Slice" and "starts" not in node.attrs:  # a constant window of a shape vector
        starts, axes, steps = int_list(_input(node, 1)), int_list(_input(node, 3)), int_list(_input(node, 4))
        length = _vector_length(facts, node.inputs[0])
        if starts is None or len(starts) != 1 or axes not in (None, [0]) or steps not in (None, [1]) or length is None:
            return None
        start = min(max(starts[0] + length if starts[0] < 0 else starts[0], 0), length)
        return shape_element(facts, node.inputs[0], start + index)
    return None


def _is_minus_one_test(facts: GraphFacts, condition: gs.Tensor, vector: gs.Tensor) -> bool:
    """``condition`` is ``Equal(vector, -1)``: against -1s, constant or computed (the
    exporter's ``Mul(ConstantOfShape(.., 1), -1)``), in either order."""
    node = producer(condition)
    if node is None or node.op != "Equal" or len(node.inputs) != 2:
        return False
    for ours, other in (node.inputs, node.inputs[::-1]):
        values = _element_array(facts, other) if unwrapped(ours) is unwrapped(vector) else None
        if values is not None and values.size and all(v == -1 for v in values.flat):
            return True
    return False


def _scalar_element(facts: GraphFacts, scalar: gs.Tensor) -> Step:
    """A scalar that is a constant or ``Gather(Shape(T), k)``, as int or ``(T, k)``."""
    values = int_list(scalar)
    if values is not None and len(values) == 1:
        return values[0]
    node = producer(scalar)
    if node is None:
        return None
    if node.op in ("Cast", "Identity"):
        return _scalar_element(facts, node.inputs[0])
    if node.op in ("Squeeze", "Reshape", "Unsqueeze") and _vector_length(facts, node.inputs[0]) == 1:
        return shape_element(facts, node.inputs[0], 0)  # a one-element shape vector as a scalar
    if node.op == "Gather" and int(node.attrs.get("axis", 0)) == 0:
        index = int_list(_input(node, 1))
        if index is None or len(index) != 1:
            return None
        return shape_element(facts, node.inputs[0], index[0]) if index[0] >= 0 else _negative_shape_index(
            facts, node.inputs[0], index[0]
        )
    return None


def _negative_shape_index(facts: GraphFacts, vector: gs.Tensor, index: int) -> Step:
    length = _vector_length(facts, vector)
    return None if length is None else shape_element(facts, vector, index % length)


#: How deep ``_element_array`` follows a small integer vector's computation.
ELEMENT_DEPTH = 12


def _element_array(facts: GraphFacts, tensor: gs.Tensor | None, depth: int = ELEMENT_DEPTH) -> np.ndarray | None:
    """A small integer tensor's elements, as an object array of ints and None (unknown).

    Follows how exporters compute pads and shape vectors: Constant, Cast, Concat,
    ConstantOfShape of a known length, Mul, Reshape and Slice by constants, Transpose,
    Unsqueeze; an element computed otherwise is None. None when the shape is not known.
    """
    if tensor is None or depth <= 0:
        return None
    values = const_value(tensor)
    if values is not None:
        return values.astype(object) if values.dtype.kind in "iu" else None
    node = producer(tensor)
    shape = facts.shape(tensor)
    if node is None or shape is None or not all(isinstance(d, int) for d in shape) or int(np.prod(shape)) > SMALL_CONSTANT:
        return None
    if node.op == "ConstantOfShape":
        fill = const_value(node.attrs.get("value"))
        return np.full(shape, int(fill.reshape(-1)[0]) if fill is not None and fill.dtype.kind in "iu" else None, dtype=object)
    parts = [_element_array(facts, t, depth - 1) for t in (node.inputs if node.op in ("Concat", "Mul") else node.inputs[:1])]
    if node.op == "Concat":
        return None if any(part is None for part in parts) else np.concatenate(parts, axis=int(node.attrs.get("axis", 0)))
    if node.op == "Mul":  # elementwise, broadcasting; an unknown factor makes an unknown product
        if len(parts) != 2 or any(part is None for part in parts):
            return None
        a, b = np.broadcast_arrays(*parts)
        product = np.array([x * y if x is not None and y is not None else None for x, y in zip(a.flat, b.flat)], dtype=object)
        return product.reshape(a.shape) if a.shape == tuple(shape) else None
    first = parts[0] if parts else None
    if node.op in ("Cast", "Identity") and first is not None:
        return first
    if node.op in ("Reshape", "Unsqueeze", "Squeeze") and first is not None and first.size == int(np.prod(shape)):
        return first.reshape(shape)
    if node.op == "Transpose" and first is not None:
        perm = node.attrs.get("perm")
        return first.transpose(perm) if perm is None or len(perm) == first.ndim else None
    if node.op == "Slice" and first is not None and "starts" not in node.attrs:
        starts, ends = int_list(_input(node, 1)), int_list(_input(node, 2))
        axes = int_list(_input(node, 3)) or list(range(len(starts or [])))
        steps = int_list(_input(node, 4)) or [1] * len(axes)
        if starts is None or ends is None or not len(starts) == len(ends) == len(axes) == len(steps) or 0 in steps:
            return None
        window = [slice(None)] * first.ndim
        for start, end, ax, step in zip(starts, ends, axes, steps):
            end = None if (step < 0 and end < -(2**62)) or (step > 0 and end > 2**62) else end
            window[ax % first.ndim] = slice(start, end, step)
        sliced = first[tuple(window)]
        return sliced if tuple(sliced.shape) == tuple(shape) else None
    return np.full(shape, None, dtype=object)


def _vector_length(facts: GraphFacts, vector: gs.Tensor) -> int | None:
    shape = facts.shape(vector)
    if shape is not None and len(shape) == 1 and isinstance(shape[0], int):
        return shape[0]
    return None
