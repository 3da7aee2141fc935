"""One step of the provenance walk: which input dim an output dim provably comes from.

Each op kind the walk knows has a step function; a step returns the (tensor, axis) the
dim is carried from, a static size, a symbol, or None where the op does not provably
keep the dim. Shape vectors are followed element by element (``vectors``).
"""

from __future__ import annotations

import onnx_graphsurgeon as gs

from hubert_fix.analysis.contrib import standard
from hubert_fix.analysis.graph import input_at, int_list, node_axes, producer
from hubert_fix.analysis.vectors import element_array, scalar_element, shape_element, vector_length
from hubert_fix.analysis.walk import Facts, Step

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
    rule = standard(node)  # a contrib op of ONNX Runtime: walked as the standard op with its shape rule
    if rule is not None:
        if out_index not in rule.outputs:
            return None
        op, out_index = rule.op, 0
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
        pads = element_array(facts, input_at(node, 1))
        if rank is None or pads is None or pads.size != 2 * rank or input_at(node, 3) is not None:
            return None
        return (first, axis) if pads[axis] == 0 and pads[axis + rank] == 0 else None
    if op == "Range":  # Range(0, n, 1) has n elements (torchaudio's arange(T) for its length mask)
        start, delta = int_list(input_at(node, 0)), int_list(input_at(node, 2))
        return (
            scalar_element(facts, node.inputs[1]) if start == [0] and delta == [1] and len(node.inputs) == 3 else None
        )
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
