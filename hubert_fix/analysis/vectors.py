"""Shape vectors element by element: which dim (or size) element ``i`` of a traced shape
vector is (``Shape``, ``Gather``, ``Concat``, ``Slice``, ``Where(v == -1, ...)``, ...), and
the values of small integer vectors computed from constants."""

import numpy as np
import onnx_graphsurgeon as gs

from hubert_fix.analysis.graph import SMALL_CONSTANT, const_value, input_at, int_list, producer, unwrapped
from hubert_fix.analysis.walk import Facts, Step


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
        values = element_array(facts, other) if unwrapped(ours) is unwrapped(vector) else None
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
        return (
            shape_element(facts, node.inputs[0], index[0])
            if index[0] >= 0
            else _negative_shape_index(facts, node.inputs[0], index[0])
        )
    return None


def _negative_shape_index(facts: Facts, vector: gs.Tensor, index: int) -> Step:
    length = vector_length(facts, vector)
    return None if length is None else shape_element(facts, vector, index % length)


#: How deep ``element_array`` follows a small integer vector's computation.
ELEMENT_DEPTH = 12


def element_array(facts: Facts, tensor: gs.Tensor | None, depth: int = ELEMENT_DEPTH) -> np.ndarray | None:
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
    if (
        node is None
        or shape is None
        or not all(isinstance(d, int) for d in shape)
        or int(np.prod(shape)) > SMALL_CONSTANT
    ):
        return None
    if node.op == "ConstantOfShape":
        fill = const_value(node.attrs.get("value"))
        return np.full(
            shape, int(fill.reshape(-1)[0]) if fill is not None and fill.dtype.kind in "iu" else None, dtype=object
        )
    parts = [
        element_array(facts, t, depth - 1) for t in (node.inputs if node.op in ("Concat", "Mul") else node.inputs[:1])
    ]
    if node.op == "Concat":
        return (
            None if any(part is None for part in parts) else np.concatenate(parts, axis=int(node.attrs.get("axis", 0)))
        )
    if node.op == "Mul":  # elementwise, broadcasting; an unknown factor makes an unknown product
        if len(parts) != 2 or any(part is None for part in parts):
            return None
        a, b = np.broadcast_arrays(*parts)
        product = np.array(
            [x * y if x is not None and y is not None else None for x, y in zip(a.flat, b.flat)], dtype=object
        )
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
