"""What the passes know of lengths computed in a graph: padded lengths the trace froze, values
proven >= 0, and a short formula for a scalar (for reports).

fairseq's ``pad_to_multiple`` traced with a float multiple (fairseq issue #5596's
workaround) records ``pad = K - T`` with K the example's padded length as a constant
(``frozen_total``); frozen-pad clamps it (``clamped_total``), and frozen-slice must know
both. Shared here so that no pass imports another.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from hubert_fix.analysis.dims import GraphFacts
from hubert_fix.analysis.graph import VALUE_KEEPING, const_value, int_list, producer, unwrapped

# Ops whose output is >= 0 when all their inputs are (for Concat/Gather/Slice: the data input).
_NONNEG_IF_INPUTS = frozenset({"Add", "Mul", "Max", "Min", "Div", "Cast", "Identity", "Sum"})
_NONNEG_IF_FIRST = frozenset({"Unsqueeze", "Squeeze", "Reshape", "Gather", "Slice", "Expand", "Concat"})


def frozen_total(node: gs.Node | None, facts: GraphFacts) -> int | None:
    """K when ``node`` is ``Sub(K, T)``: a constant minus a dim proven dynamic (a frozen padded length)."""
    if node is None or node.op != "Sub" or len(node.inputs) != 2:
        return None
    total = int_list(unwrapped(node.inputs[0]))
    dim = node.inputs[1]
    if total is None or len(total) != 1 or const_value(dim) is not None:
        return None
    size = facts.scalar_dim(dim)
    return total[0] if size is not None and not isinstance(size, int) else None


def _is_zero(tensor: gs.Tensor) -> bool:
    value = const_value(tensor)
    return value is not None and value.size == 1 and value.reshape(-1)[0] == 0


def clamped(node: gs.Node | None) -> gs.Tensor | None:
    """x when ``node`` computes ``max(x, 0)``: ``Max(x, 0)`` (frozen-pad's clamp from opset 12), or
    ``Where(Less(x, 0), 0, x)`` (its clamp at opset 11, where Max takes no integers)."""
    if node is None or len(node.inputs) < 2:
        return None
    if node.op == "Max" and len(node.inputs) == 2 and _is_zero(node.inputs[1]):
        return node.inputs[0]
    if node.op == "Where" and len(node.inputs) == 3 and _is_zero(node.inputs[1]):
        less = producer(node.inputs[0])
        x = node.inputs[2]
        if less is not None and less.op == "Less" and less.inputs[0] is x and _is_zero(less.inputs[1]):
            return x
    return None


def clamped_total(tensor: gs.Tensor, facts: GraphFacts) -> int | None:
    """K when ``tensor`` is ``max(Sub(K, T), 0)`` (see ``clamped``): a frozen padded length frozen-pad clamped."""
    x = clamped(producer(unwrapped(tensor)))
    return None if x is None else frozen_total(producer(x), facts)


def proven_nonnegative(tensor: gs.Tensor, depth: int = 0) -> bool:
    """True when every element of ``tensor`` is >= 0 for every input of the model.

    Sizes from ``Shape``/``Size`` are >= 0; ONNX ``Mod`` with ``fmod=0`` takes the sign of
    the divisor (with ``fmod=1`` the dividend's); the rest keep the sign of their inputs.
    """
    if depth > 32:
        return False
    values = const_value(tensor)
    if values is not None:
        return values.size > 0 and bool(np.all(values >= 0))
    node = producer(tensor)
    if node is None:
        return False
    inputs = [t for t in node.inputs if t.name != ""]
    if node.op in ("Shape", "Size"):
        return True
    if node.op == "Mod":
        sign_from = inputs[0] if node.attrs.get("fmod", 0) else inputs[1]
        return proven_nonnegative(sign_from, depth + 1)
    if node.op in _NONNEG_IF_INPUTS:
        return all(proven_nonnegative(t, depth + 1) for t in inputs)
    if node.op in _NONNEG_IF_FIRST:
        data = inputs if node.op == "Concat" else inputs[:1]
        return all(proven_nonnegative(t, depth + 1) for t in data)
    return False


def describe_value(tensor: gs.Tensor, depth: int = 0) -> str:
    """A short formula for a scalar, e.g. ``Mod(Shape(padding_mask)[1], Shape(x)[1])``."""
    values = const_value(tensor)
    if values is not None:
        if values.size > 4:
            return f"<constant {list(values.shape)}>"
        return str(values.reshape(-1).tolist()[0] if values.size == 1 else values.tolist())
    node = producer(tensor)
    if node is None or depth > 4:
        return tensor.name
    if node.op == "Gather" and producer(node.inputs[0]) is not None and producer(node.inputs[0]).op == "Shape":
        index = int_list(node.inputs[1])
        source = producer(node.inputs[0]).inputs[0].name
        return f"Shape({source})[{index[0] if index and len(index) == 1 else '?'}]"
    if node.op in VALUE_KEEPING:
        return describe_value(node.inputs[0], depth + 1)
    args = ", ".join(describe_value(t, depth + 1) for t in node.inputs if t.name != "")
    return f"{node.op}({args})"
