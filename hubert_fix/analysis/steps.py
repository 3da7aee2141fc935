"""One step of the provenance walk: which input dim an output dim provably comes from.

Each op kind the walk knows has a step function; a step returns the (tensor, axis) the
dim is carried from, a static size, a symbol, or None where the op does not provably
keep the dim. Shape vectors are followed element by element (``shape_element``).
"""

from __future__ import annotations


from typing import Protocol

import numpy as np
import onnx_graphsurgeon as gs

from hubert_fix.analysis.graph import SMALL_CONSTANT, const_value, input_at, int_list, node_axes, producer, unwrapped
from hubert_fix.analysis.shapes import Dim

#: Where a provenance walk ends: a static size, a model-declared symbol, or the
#: ``(tensor name, axis)`` at which the walk had to stop.
Root = int | str | tuple[str, int]


class Facts(Protocol):
    """What a step asks of the facts it walks (``dims.GraphFacts``, which calls the steps)."""

    def rank(self, tensor: gs.Tensor) -> int | None: ...

    def shape(self, tensor: gs.Tensor) -> tuple[Dim, ...] | None: ...

    def root(self, tensor: gs.Tensor, axis: int) -> Root | None: ...

    def is_one(self, tensor: gs.Tensor, axis: int) -> bool: ...


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


# ------------------------------------------------------------------- one walk step

Step = tuple[gs.Tensor, int] | int | str | None


def walk_step(facts: Facts, tensor: gs.Tensor, axis: int) -> Step:
    """One step back: the ``(input, axis)`` that ``(tensor, axis)`` provably equals.

    May also return a root directly (a static size or a declared symbol), or None
    when no step is proven (unknown op, dynamic axes, ...), which ends the walk.
    """
    node = producer(tensor)
    if node is None:
        return None
    out_index = next(i for i, t in enumerate(node.outputs) if t is tensor)
    op = node.op
    first = input_at(node, 0)
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
        element = shape_element(facts, input_at(node, 1), axis)
        if element == 0 and not node.attrs.get("allowzero", 0):
            return (first, axis)
        if isinstance(element, int):
            return element if element > 0 else None
        return element
    if op == "Tile":
        # out.shape[i] == in.shape[i] * repeats[i]: the dim is kept where repeats[i] is 1
        return (first, axis) if shape_element(facts, input_at(node, 1), axis) == 1 else None
    if op == "Expand":
        return _expand_step(facts, node, tensor, axis)
    if op == "Pad":  # the dim is kept where the pads of this axis are both 0 (torch's F.pad of another axis)
        rank = facts.rank(tensor)
        pads = _element_array(facts, input_at(node, 1))
        if rank is None or pads is None or pads.size != 2 * rank or input_at(node, 3) is not None:
            return None
        return (first, axis) if pads[axis] == 0 and pads[axis + rank] == 0 else None
    if op == "Range":  # Range(0, n, 1) has n elements (torchaudio's arange(T) for its length mask)
        start, delta = int_list(input_at(node, 0)), int_list(input_at(node, 2))
        return scalar_element(facts, node.inputs[1]) if start == [0] and delta == [1] and len(node.inputs) == 3 else None
    if op in _POOL_OPS:
        return (first, 0) if axis == 0 and out_index == 0 else None
    if op == "MatMul":
        return _matmul_step(facts, node, tensor, axis)
    return None


def _broadcast_step(facts: Facts, node: gs.Node, tensor: gs.Tensor, axis: int) -> Step:
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


def _expand_step(facts: Facts, node: gs.Node, tensor: gs.Tensor, axis: int) -> Step:
    """Expand broadcasts its input against ``shape`` (right-aligned): where the shape
    vector says 1 (or is too short to reach the axis) the input's dim is kept."""
    first, vector = node.inputs[0], input_at(node, 1)
    out_rank, in_rank = facts.rank(tensor), facts.rank(first)
    length = None if vector is None else vector_length(facts, vector)
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


def _reduce_step(facts: Facts, node: gs.Node, axis: int) -> Step:
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
        if input_at(node, 1) is not None:
            return None  # dynamic axes
        if node.attrs.get("noop_with_empty_axes", 0):
            return (data, axis)
        axes = list(range(in_rank))
    reduced = {a % in_rank for a in axes}
    if keepdims:
        return 1 if axis in reduced else (data, axis)
    kept = [i for i in range(in_rank) if i not in reduced]
    return (data, kept[axis]) if axis < len(kept) else None


def _slice_step(facts: Facts, node: gs.Node, axis: int) -> Step:
    data = node.inputs[0]
    rank = facts.rank(data)
    if rank is None:
        return None
    if "starts" in node.attrs:  # opset < 10: everything is an attribute
        axes = node.attrs.get("axes") or list(range(len(node.attrs["starts"])))
    else:
        axes = int_list(input_at(node, 3))
        if axes is None:
            if input_at(node, 3) is not None:
                return None
            starts = input_at(node, 1)
            length = None if starts is None else vector_length(facts, starts)
            if length is None:
                return None
            axes = list(range(length))
    if axis not in {a % rank for a in axes}:
        return (data, axis)
    # a whole-axis reversal (x.flip(d): starts -1, ends <= -2**62, steps -1) keeps the length
    if "starts" not in node.attrs and len(axes) == 1:
        starts, ends, steps = (int_list(input_at(node, i)) for i in (1, 2, 4))
        if starts == [-1] and ends is not None and ends[0] <= -(2**62) and steps == [-1]:
            return (data, axis)
    return None


def _matmul_step(facts: Facts, node: gs.Node, tensor: gs.Tensor, axis: int) -> Step:
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


def shape_element(facts: Facts, vector: gs.Tensor | None, index: int) -> Step:
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
    if node.op == "Reshape" and facts.rank(node.inputs[0]) == 1 and int_list(input_at(node, 1)) == [-1]:
        return shape_element(facts, node.inputs[0], index)  # a vector flattened: the same elements
    if node.op == "Where" and _is_minus_one_test(facts, node.inputs[0], node.inputs[2]):
        # torch's expand(sizes): Where(sizes == -1, 1, sizes); a traced dim is never -1
        element = shape_element(facts, node.inputs[2], index)
        return element if isinstance(element, tuple) or isinstance(element, int) and element >= 0 else None
    if node.op == "ConstantOfShape":  # every element is the integer ``value`` (e.g. ones_like)
        fill = const_value(node.attrs.get("value"))
        length = vector_length(facts, vector)
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
            length = vector_length(facts, part)
            if length is None:
                return None
            if offset < length:
                return shape_element(facts, part, offset)
            offset -= length
        return None
    if node.op == "Unsqueeze" and index == 0 and facts.rank(node.inputs[0]) == 0:
        return scalar_element(facts, node.inputs[0])
    if node.op == "Slice" and "starts" not in node.attrs:  # a constant window of a shape vector
        starts, axes, steps = int_list(input_at(node, 1)), int_list(input_at(node, 3)), int_list(input_at(node, 4))
        length = vector_length(facts, node.inputs[0])
        if starts is None or len(starts) != 1 or axes not in (None, [0]) or steps not in (None, [1]) or length is None:
            return None
        start = min(max(starts[0] + length if starts[0] < 0 else starts[0], 0), length)
        return shape_element(facts, node.inputs[0], start + index)
    return None


def _is_minus_one_test(facts: Facts, condition: gs.Tensor, vector: gs.Tensor) -> bool:
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


def scalar_element(facts: Facts, scalar: gs.Tensor) -> Step:
    """A scalar that is a constant or ``Gather(Shape(T), k)``, as int or ``(T, k)``."""
    values = int_list(scalar)
    if values is not None and len(values) == 1:
        return values[0]
    node = producer(scalar)
    if node is None:
        return None
    if node.op in ("Cast", "Identity"):
        return scalar_element(facts, node.inputs[0])
    if node.op in ("Squeeze", "Reshape", "Unsqueeze") and vector_length(facts, node.inputs[0]) == 1:
        return shape_element(facts, node.inputs[0], 0)  # a one-element shape vector as a scalar
    if node.op == "Gather" and int(node.attrs.get("axis", 0)) == 0:
        index = int_list(input_at(node, 1))
        if index is None or len(index) != 1:
            return None
        return shape_element(facts, node.inputs[0], index[0]) if index[0] >= 0 else _negative_shape_index(
            facts, node.inputs[0], index[0]
        )
    return None


def _negative_shape_index(facts: Facts, vector: gs.Tensor, index: int) -> Step:
    length = vector_length(facts, vector)
    return None if length is None else shape_element(facts, vector, index % length)


#: How deep ``_element_array`` follows a small integer vector's computation.
ELEMENT_DEPTH = 12


def _element_array(facts: Facts, tensor: gs.Tensor | None, depth: int = ELEMENT_DEPTH) -> np.ndarray | None:
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
        starts, ends = int_list(input_at(node, 1)), int_list(input_at(node, 2))
        axes = int_list(input_at(node, 3)) or list(range(len(starts or [])))
        steps = int_list(input_at(node, 4)) or [1] * len(axes)
        if starts is None or ends is None or not len(starts) == len(ends) == len(axes) == len(steps) or 0 in steps:
            return None
        window = [slice(None)] * first.ndim
        for start, end, ax, step in zip(starts, ends, axes, steps):
            end = None if (step < 0 and end < -(2**62)) or (step > 0 and end > 2**62) else end
            window[ax % first.ndim] = slice(start, end, step)
        sliced = first[tuple(window)]
        return sliced if tuple(sliced.shape) == tuple(shape) else None
    return np.full(shape, None, dtype=object)


def vector_length(facts: Facts, vector: gs.Tensor) -> int | None:
    shape = facts.shape(vector)
    if shape is not None and len(shape) == 1 and isinstance(shape[0], int):
        return shape[0]
    return None
