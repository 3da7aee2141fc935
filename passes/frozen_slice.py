"""frozen-slice: fix ``x[:, :-n]`` and ``x[:, -n:]`` whose ``if n > 0`` guard the trace dropped.

HuBERT's ``forward_padding_mask`` does::

    extra = padding_mask.size(1) % features.size(1)
    if extra > 0:
        padding_mask = padding_mask[:, :-extra]

Tracing freezes the ``if`` (taken for the example input), so the graph always slices
with ``ends = -extra``. When ``samples % frames == 0`` at run time the end is ``-0 == 0``
and the slice is empty: the model fails or returns NaN. fairseq's encoder without a
padding mask does the same with a *start*: ``if pad_length > 0 and padding_mask is
None: padding_mask[:, -pad_length:] = True``; traced (dynamo), pad 0 makes the start
``-0`` and masks every frame.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs
from onnx_graphsurgeon.exporters.onnx_exporter import dtype_to_onnx

from hubert_fix.analysis.dims import GraphFacts
from hubert_fix.analysis.graph import VALUE_KEEPING, const_value, input_at, int_list, producer, unique_name, unwrapped
from hubert_fix.analysis.lengths import clamped_total, describe_value, frozen_total, proven_nonnegative
from hubert_fix.passes.contract import Declined, Edit, RewritePass, Scope, node_label

# Ops that pass a one-element value through unchanged (value-wise) on its way to a Slice bound.
_WRAPPERS = frozenset({"Unsqueeze", "Reshape", "Squeeze", "Cast", "Identity", "Concat"})


_BOUNDS = {1: "starts", 2: "ends"}  # Slice input index -> name


@dataclass(frozen=True)
class _Candidate:
    """A Slice bound that is a negation ``-n``: the parts the decision and the report read."""

    slice_node: gs.Node
    index: int  # the Slice input: 1 (starts) or 2 (ends)
    data: gs.Tensor  # the sliced tensor
    bound: gs.Tensor
    neg: gs.Node  # the negating node
    n: gs.Tensor

    @property
    def name(self) -> str:
        return node_label(self.slice_node)

    @property
    def which(self) -> str:
        return _BOUNDS[self.index]

    @property
    def pattern(self) -> str:
        """The bound as reports show it, e.g. ``ends = -(Mod(...)) via Neg '/Neg'``."""
        return f"{self.which} = -({describe_value(self.n)}) via {self.neg.op} '{node_label(self.neg)}'"


@dataclass(frozen=True)
class _Plan:
    """One planned fix, decided before any edit."""

    slice_node: gs.Node
    index: int  # the Slice input rewritten: 1 (starts) or 2 (ends)
    axis: int
    dtype: np.dtype
    names: dict[str, str]
    edit: Edit


class FrozenSlice(RewritePass):
    """Rewrite a Slice start or end -n to dim - n where n's guard ``if n > 0`` was traced away.

    Candidate: a ``Slice`` (opset >= 10 input form) whose ``starts`` or ``ends`` is a
    negation of some n, possibly through single-element
    Unsqueeze/Reshape/Squeeze/Cast/Concat: ``Neg(n)``, ``Mul(n, -1)`` / ``Mul(-1, n)``
    with a constant -1 (the dynamo exporter's form), or ``Sub(0, n)``.

    Repaired when ``axes`` is one constant axis (or absent with one element: axis 0),
    ``steps`` is absent or constant positive, and the graph shows that n is an amount
    that a guard ``if n > 0`` protected, by one of:

    * n is a remainder ``Mod(a, b)`` (the trim-to-multiple idiom ``extra = len % k;
      if extra > 0: x = x[:-extra]``) whose dividend a is proven to be the sliced dim
      (so n <= dim), or n is proven >= 0 (``Mod`` with ``fmod=0`` takes the divisor's
      sign; the divisor is built from ``Shape`` values). The TorchScript exporter
      slices by ``Gather(Shape(mask), 1) % frames``; the dynamo exporter by
      ``Squeeze(Shape(source, 1, 2)) % <frame formula>``, with ``samples`` shared;
    * n is also the end pad of an axis in a ``Pad``: fairseq's ``pad_to_multiple``
      pads T by ``pad_length``, and every later use of ``-pad_length`` sits under
      ``if pad_length > 0`` (the trim ``x[:, :-pad_length]``; without a padding mask,
      ``padding_mask[:, -pad_length:] = True``, which the dynamo exporter writes as
      Slices of the new mask and of a Range of its positions).

    Then the bound ``b = -n`` becomes ``Add(Gather(Shape(data), [axis]), b)``, i.e.
    ``dim - n``: for 0 < n <= dim that is the same position as ``-n``; for n == 0 it is
    ``dim``, so an end keeps everything and a start selects nothing, which is what the
    dropped ``if n > 0`` guard did (for n < 0, more than ``dim``: the same).

    Declined, not blocking: n is neither. An unguarded ``x[:, :-n]`` is empty for n == 0
    in PyTorch too, and nothing shows that a guard was dropped.
    Declined, blocking: a remainder neither bounded by the dim nor proven >= 0, the
    axis is not one constant, or steps are not constant positive.

    Before::

        n = Mod(Gather(Shape(mask), 1), Gather(Shape(features), 1))
        Slice(mask, starts=[0], ends=Unsqueeze(Neg(n)), axes=[1])    # n == 0 -> empty

    After::

        Slice(mask, starts=[0], ends=Add(Gather(Shape(mask), [1]), Unsqueeze(Neg(n))), axes=[1])

    Why this is evidence: ``x[:-(len % k)]`` without a guard would empty x whenever len
    is a multiple of k, in PyTorch too, so code that slices by a remainder guards it
    (fairseq does); likewise nothing is trimmed or masked after a padding of length 0.
    The trace is what dropped the guard.

    Idempotent: after the repair the bound is produced by Add, not by a negation.
    """

    name = "frozen-slice"

    def match(self, scope: Scope) -> Iterator[_Candidate | None]:
        return (_match(node, index) for node in scope.graph.nodes if node.op == "Slice" for index in _BOUNDS)

    def prove(self, candidate: _Candidate, scope: Scope) -> Declined | int:
        return _prove(candidate, scope.facts)

    def plan(self, candidate: _Candidate, axis: int, scope: Scope) -> _Plan:
        return _plan(candidate, axis, scope.facts, scope.taken)

    def rewrite(self, plan: _Plan, graph: gs.Graph) -> None:
        _apply(plan, graph)


def _is_const(tensor: gs.Tensor, value: int) -> bool:
    """True when ``tensor`` is a constant whose every element equals ``value``."""
    array = const_value(tensor)
    return array is not None and array.size >= 1 and bool(np.all(array == value))


def negated_operand(bound: gs.Tensor) -> tuple[gs.Node, gs.Tensor] | None:
    """If ``bound`` is ``-n`` (through one-element wrappers), the negating node and n."""
    tensor = bound
    while True:
        node = producer(tensor)
        if node is None:
            return None
        if node.op in _WRAPPERS:
            if node.op == "Concat" and len(node.inputs) != 1:
                return None
            tensor = node.inputs[0]
            continue
        if node.op == "Neg":
            return node, node.inputs[0]
        if node.op == "Mul" and len(node.inputs) == 2:
            a, b = node.inputs
            if _is_const(b, -1):
                return node, a
            if _is_const(a, -1):
                return node, b
            return None
        if node.op == "Sub" and len(node.inputs) == 2 and _is_const(node.inputs[0], 0):
            return node, node.inputs[1]
        return None


def _remainder(tensor: gs.Tensor) -> gs.Node | None:
    """The ``Mod`` node ``tensor`` comes from (through value-keeping wrappers), if any."""
    node = producer(unwrapped(tensor))
    return node if node is not None and node.op == "Mod" else None


def _padding_amount(n: gs.Tensor, facts: GraphFacts) -> gs.Node | None:
    """A ``Pad`` that pads the end of some axis by this very n, if there is one.

    fairseq's ``pad_to_multiple`` pads the time axis by ``pad_length``, and what later
    undoes or marks that padding (``x[:, :-pad_length]``, ``mask[:, -pad_length:] =
    True``) sits under ``if pad_length > 0``. Found by following n's consumers through
    value-keeping wrappers into the Concat that builds a Pad's ``pads``; the position of
    n there must be an *end* pad (the second half of ``pads``).
    """
    frontier, seen = [n], set()
    while frontier:
        tensor = frontier.pop()
        if tensor.name in seen:
            continue
        seen.add(tensor.name)
        for consumer in tensor.outputs:
            if consumer.op in VALUE_KEEPING:
                frontier.extend(consumer.outputs[:1])
            elif consumer.op == "Concat" and int(consumer.attrs.get("axis", 0)) == 0:
                pad = _pad_of(consumer, tensor, facts)
                if pad is not None:
                    return pad
    return None


def _pad_of(concat: gs.Node, part: gs.Tensor, facts: GraphFacts) -> gs.Node | None:
    """The Pad whose ``pads`` is ``concat`` with ``part`` as the end pad of one of its axes."""
    position = 0
    for piece in concat.inputs:
        if piece is part:
            break
        shape = facts.shape(piece)
        if shape is None or len(shape) != 1 or not isinstance(shape[0], int):
            return None
        position += shape[0]
    for pad in concat.outputs[0].outputs:
        if pad.op != "Pad" or len(pad.inputs) < 2 or pad.inputs[1] is not concat.outputs[0]:
            continue
        rank = facts.rank(pad.outputs[0])
        if rank is None or input_at(pad, 3) is not None:
            continue  # unknown rank, or pads restricted to some axes (opset 18 ``axes``)
        if rank <= position < 2 * rank:  # pads = [begin per axis..., end per axis...]
            return pad
    return None


def _frozen_length(n: gs.Tensor, facts: GraphFacts) -> str:
    """Why n is a padded length the trace froze and frozen-pad left unclamped ("" when it is not).

    ``K - T`` with K the example's padded length (see ``passes.frozen_pad``): inputs over
    K frames are cropped. frozen-pad clamps it (run it, or do not skip it); alone, a
    slice by it cannot be repaired.
    """
    sub = producer(unwrapped(n))
    total = frozen_total(sub, facts)
    if total is None:
        return ""
    return (
        f"n = {total} - {describe_value(sub.inputs[1])}: a padded length the trace froze at "
        f"{total} (fairseq's pad_to_multiple traced with a float multiple, fairseq issue #5596's workaround), not "
        "clamped by frozen-pad (no Pad uses it, or the pass was skipped); inputs longer than that are truncated. "
        "Re-export with the sample axis static, or export with hubert-fix export (which traces without the padding)"
    )


def _match(node: gs.Node, index: int) -> _Candidate | None:
    """A Slice whose start or end (input form, opset >= 10) is a negation -n is a candidate."""
    bound = input_at(node, index)
    if bound is None:
        return None  # opset < 10 attribute form: bounds are constants, nothing frozen
    found = negated_operand(bound)
    if found is None:
        return None
    return _Candidate(node, index, node.inputs[0], bound, *found)


def _blocked(c: _Candidate, why: str) -> Declined:
    """A candidate that may be the defect but cannot be repaired safely: declined, blocking."""
    return Declined(node=c.name, op="Slice", reason=f"{c.pattern}: {why}", blocking=True)


def _prove(c: _Candidate, facts: GraphFacts) -> Declined | int:
    """Repair only one constant axis and an n that a dropped ``if n > 0`` guarded: the sliced axis."""
    axis = _sliced_axis(c, facts)
    if isinstance(axis, str):
        return _blocked(c, axis)
    frozen = _frozen_length(c.n, facts)
    if frozen:
        return _blocked(c, frozen)
    unguarded = _unguarded(c, facts, axis)
    return axis if unguarded is None else unguarded


def _sliced_axis(c: _Candidate, facts: GraphFacts) -> int | str:
    """The one constant axis the Slice cuts with positive steps (dim - n needs it), or why there is none."""
    axes_t, steps_t = input_at(c.slice_node, 3), input_at(c.slice_node, 4)
    if axes_t is None:
        bound_shape = facts.shape(c.bound)
        if bound_shape != (1,):
            return f"no axes and {c.which} has shape {facts.describe(c.bound)}, not one element"
        axis = 0
    else:
        axes = int_list(axes_t)
        if axes is None or len(axes) != 1:
            return "axes is not a single constant axis"
        axis = axes[0]
    if steps_t is not None:
        steps = int_list(steps_t)
        if steps is None or any(s <= 0 for s in steps):
            return "steps are not constant and positive"
    return axis


def _unguarded(c: _Candidate, facts: GraphFacts, axis: int) -> Declined | None:
    """Why n shows no dropped guard, or why dim - n may differ from -n (None: the repair is safe)."""
    mod = _remainder(c.n)
    pad = None if mod is not None else _padding_amount(c.n, facts)
    if mod is None and pad is None and clamped_total(c.n, facts) is None:
        return Declined(
            node=c.name,
            op="Slice",
            blocking=False,
            reason=f"{c.pattern}: n is neither a remainder (Mod), nor the end padding of a Pad, nor a clamped "
            f"frozen pad, so no dropped guard is evident; an unguarded x[{'-n:' if c.index == 1 else ':-n'}] does "
            "the same for n == 0 in PyTorch too, left as exported",
        )
    if mod is not None and not (facts.value_is_dim(mod.inputs[0], c.data, axis) or proven_nonnegative(c.n)):
        return _blocked(
            c,
            f"n = {describe_value(c.n)}: its dividend is not proven to be the sliced dim "
            f"{facts.dim_str(c.data, axis)}, nor n proven >= 0, so dim - n may differ from -n; cannot repair safely",
        )
    return None


def _plan(c: _Candidate, axis: int, facts: GraphFacts, taken: set[str]) -> _Plan:
    """Name the Shape/Gather/(Cast)/Add that compute dim + bound, and report it."""
    dtype = facts.dtype(c.bound) or np.dtype(np.int64)
    base = f"{c.name}/{'start' if c.index == 1 else 'end'}_fix"
    names = {
        key: unique_name(f"{base}/{key}", taken)
        for key in ("Shape", "Shape_output_0", "Gather", "Gather_output_0", "indices", "Cast",
                    "Cast_output_0", "Add", "Add_output_0")
    }  # fmt: skip
    dim = facts.dim_str(c.data, axis)
    at_zero = "empty" if c.index == 2 else "the whole axis (the guard selected nothing)"
    kept = f"== {dim}, everything" if c.index == 2 else f"== {dim}, nothing"
    edit = Edit(
        node=c.name,
        op="Slice",
        before=f"Slice of {facts.describe(c.data)} on axis {axis} with {c.pattern}: {at_zero} when n == 0",
        after=f"{c.which} = {dim} - n ({kept} when n == 0)",
        action=f"inserted Shape/Gather/Add '{names['Add']}' computing dim + {c.which}",
    )
    return _Plan(c.slice_node, c.index, axis, dtype, names, edit)


def _apply(plan: _Plan, graph: gs.Graph) -> None:
    """``bound := Add(Gather(Shape(data), [axis]), bound)`` (Cast to the bound's type if not int64)."""
    data, bound = plan.slice_node.inputs[0], plan.slice_node.inputs[plan.index]
    names = plan.names
    shape = gs.Variable(names["Shape_output_0"], dtype=np.int64)
    indices = gs.Constant(names["indices"], np.array([plan.axis], dtype=np.int64))
    dim = gs.Variable(names["Gather_output_0"], dtype=np.int64)
    new_nodes = [
        gs.Node("Shape", names["Shape"], inputs=[data], outputs=[shape]),
        gs.Node("Gather", names["Gather"], attrs={"axis": 0}, inputs=[shape, indices], outputs=[dim]),
    ]
    if plan.dtype != np.int64:
        cast = gs.Variable(names["Cast_output_0"], dtype=plan.dtype)
        new_nodes.append(
            gs.Node("Cast", names["Cast"], attrs={"to": dtype_to_onnx(plan.dtype)}, inputs=[dim], outputs=[cast])
        )
        dim = cast
    new_bound = gs.Variable(names["Add_output_0"], dtype=plan.dtype)
    new_nodes.append(gs.Node("Add", names["Add"], inputs=[dim, bound], outputs=[new_bound]))
    plan.slice_node.inputs[plan.index] = new_bound
    graph.nodes.extend(new_nodes)
