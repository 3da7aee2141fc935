"""Small read-only helpers over an onnx-graphsurgeon graph: producers, constants, attributes."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

#: Constants up to this many elements stay inline in the inference copy, because
#: Reshape/Slice/Unsqueeze/Reduce need their *values*; larger ones become shape-only inputs.
SMALL_CONSTANT = 64


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


def input_at(node: gs.Node, index: int) -> gs.Tensor | None:
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
    return int_list(input_at(node, input_index))


def unique_name(base: str, taken: set[str]) -> str:
    """``base`` or ``base_1``, ``base_2``...: deterministic and unused; reserves it in ``taken``."""
    name, k = base, 0
    while name in taken:
        k += 1
        name = f"{base}_{k}"
    taken.add(name)
    return name
