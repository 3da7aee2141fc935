"""frozen-pad: clamp at 0 a padded length the trace froze, so longer inputs are not cropped.

fairseq's encoder pads the frames to a multiple of ``required_seq_len_multiple``
(``pad_to_multiple``: ``ceil(T / m) * m - T``) and cuts the padding off after the
layers. TorchScript cannot trace the original (``.is_integer()`` on a traced size);
fairseq issue #5596's workaround makes ``m`` a float, and then the trace records
``K - T`` with K the *example's* padded length as a constant (50 for a 1 s example).
For inputs longer than K frames the pad is negative: ONNX ``Pad`` crops, and the
output is truncated to about K frames, silently.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from hubert_fix.analysis.dims import GraphFacts
from hubert_fix.analysis.graph import producer, unique_name
from hubert_fix.analysis.lengths import clamped, frozen_total
from hubert_fix.analysis.shapes import Dim
from hubert_fix.passes.contract import Edit, RewritePass, Scope, node_label

# How many nodes back from a Pad's ``pads`` input the pad amount is looked for (the
# TorchScript exporter builds ``pads`` through Concat/Reshape/Slice/Transpose/Cast, about 8).
_PADS_DEPTH = 16


@dataclass(frozen=True)
class _Candidate:
    """A ``Sub(K, T)`` that froze a padded length some Pad uses: the Sub, K and T's dim."""

    sub: gs.Node
    total: int
    dim: Dim  # T's dim: a symbol (frozen_total proved it dynamic)


@dataclass(frozen=True)
class _Plan:
    """One planned clamp, decided before any edit."""

    sub: gs.Node
    names: dict[str, str]  # the clamp's node, its output and the zero constant; at opset 11 the Less too
    opset: int
    edit: Edit


class FrozenPad(RewritePass):
    """Clamp ``pad = K - T`` (K a constant, T a dynamic frame count) at 0: ``Max(K - T, 0)``.

    Candidate: a ``Sub(K, T)`` with K an integer constant and T proven to be a dynamic
    dim (``Shape`` of a tensor, through Gather/Slice/Squeeze), where a K of the same
    value reaches a ``Pad``'s ``pads`` (within a few nodes): the trace froze the padded
    length at K. Every such Sub with that K is clamped (the encoder computes the pad of
    the features, of the mask and of the trim each from its own ``Shape``).

    Why the result is right: for T <= K nothing changes (``Max`` is the identity), so the
    model computes what the export computed, padding to K with masked frames; for T > K
    the pad is 0 instead of negative, so nothing is cropped and, once frozen-slice has
    made the trim ``x[:, :dim - 0]`` keep everything, the encoder runs on the unpadded
    frames, which is what fairseq computes whenever T is already a multiple (padding
    exists only for speed: padded keys are masked in attention and the padded rows cut
    off again; ``hubert-fix export`` traces without it on that ground).

    Before::

        pad = Sub(50, Squeeze(Slice(Shape(x), -2, -1)))     # -49 at 99 frames: Pad crops
        Pad(x, pads(..., pad, ...));  ...;  Slice(y, ends=Neg(Sub(50, ...)))

    After::

        pad = Max(Sub(50, ...), 0)                           # every consumer of the Sub

    Idempotent: a Sub whose every consumer is such a ``Max`` is not a candidate.
    """

    name = "frozen-pad"

    def match(self, scope: Scope) -> Iterator[_Candidate | None]:
        return (_match(node, scope.facts) for node in scope.graph.nodes if node.op == "Sub")

    def prove(self, candidate: _Candidate, scope: Scope) -> _Candidate | None:
        """The K is a padded length: a Sub with that K builds some Pad's ``pads`` (else K - T is an
        ordinary constant minus a dim, nothing to report)."""
        return candidate if candidate.total in _padded_totals(scope) else None

    def plan(self, candidate: _Candidate, proof: _Candidate, scope: Scope) -> _Plan:
        return _plan(candidate, scope.taken, scope.graph.opset)

    def rewrite(self, plan: _Plan, graph: gs.Graph) -> None:
        _apply(plan, graph)


def _totals_into(pad: gs.Node, facts: GraphFacts) -> set[int]:
    """The frozen K of every ``Sub(K, T)`` among the few nodes that build this Pad's ``pads``."""
    if len(pad.inputs) < 2:
        return set()
    found, frontier, seen = set(), [pad.inputs[1]], set()
    while frontier and len(seen) < _PADS_DEPTH:
        node = producer(frontier.pop())
        if node is None or node.name in seen or node.op in ("Shape", "Constant"):
            continue
        seen.add(node.name)
        total = frozen_total(node, facts)
        if total is not None:
            found.add(total)
            continue
        frontier.extend(t for t in node.inputs if t.name)
    return found


def _clamped(sub: gs.Node) -> bool:
    """True when every consumer of the Sub clamps it at 0 (this pass ran before): a ``Max(sub, 0)``,
    or at opset 11 the ``Less(sub, 0)`` and ``Where(less, 0, sub)`` that compute it."""
    out = sub.outputs[0]

    def clamps(node: gs.Node) -> bool:
        if clamped(node) is out:
            return True  # Max(sub, 0), or the Where of the opset-11 form
        return node.op == "Less" and all(clamped(user) is out for user in node.outputs[0].outputs)

    return bool(out.outputs) and all(clamps(node) for node in out.outputs)


def _padded_totals(scope: Scope) -> set[int]:
    """Every K that a ``Sub(K, T)`` feeds into a Pad's ``pads`` with."""
    return {total for pad in scope.graph.nodes if pad.op == "Pad" for total in _totals_into(pad, scope.facts)}


def _match(sub: gs.Node, facts: GraphFacts) -> _Candidate | None:
    """``Sub(K, T)``, K a constant and T a dim proven dynamic, is a candidate unless every consumer clamps it."""
    total = frozen_total(sub, facts)
    if total is None or _clamped(sub):
        return None
    return _Candidate(sub, total, facts.scalar_dim(sub.inputs[1]))


def _plan(c: _Candidate, taken: set[str], opset: int) -> _Plan:
    """Name the clamp at 0 (``Max``; below opset 12, which gives Max no integers, ``Where(Less(pad, 0), 0,
    pad)``), and report it."""
    total, dim, name = c.total, c.dim, node_label(c.sub)
    node_name = unique_name(f"{name}/clamp", taken)
    keys = ["node", "output", "zero"] + (["less", "less_output"] if opset < 12 else [])
    suffix = {"node": "", "output": "_output_0", "zero": "_zero", "less": "_less", "less_output": "_less_output_0"}
    names = {key: unique_name(f"{node_name}{suffix[key]}", taken) for key in keys}
    op = "Max" if opset >= 12 else "Where(Less(pad, 0), 0, pad)"
    edit = Edit(
        node=name,
        op="Sub",
        before=(
            f"pad = {total} - {dim}: the padded length the trace froze at {total} (pad_to_multiple traced with a "
            f"float multiple); negative for inputs over {total} frames, which Pad then crops"
        ),
        after=f"pad = max({total} - {dim}, 0): padded to {total} as exported up to {total} frames, unpadded beyond",
        action=f"inserted {op} '{node_name}' between the Sub and its {len(c.sub.outputs[0].outputs)} consumer(s)",
    )
    return _Plan(c.sub, names, opset, edit)


def _apply(plan: _Plan, graph: gs.Graph) -> None:
    """``max(sub, 0)`` takes the Sub's place in every consumer."""
    out, names = plan.sub.outputs[0], plan.names
    dtype = np.dtype(out.dtype) if out.dtype is not None else np.dtype(np.int64)
    clamp = gs.Variable(names["output"], dtype=dtype)
    for consumer in list(out.outputs):
        for index, tensor in enumerate(consumer.inputs):
            if tensor is out:
                consumer.inputs[index] = clamp
    zero = gs.Constant(names["zero"], np.zeros((), dtype=dtype))
    if plan.opset >= 12:
        graph.nodes.append(gs.Node("Max", names["node"], inputs=[out, zero], outputs=[clamp]))
        return
    negative = gs.Variable(names["less_output"], dtype=np.bool_)
    graph.nodes.append(gs.Node("Less", names["less"], inputs=[out, zero], outputs=[negative]))
    graph.nodes.append(gs.Node("Where", names["node"], inputs=[negative, zero, out], outputs=[clamp]))
