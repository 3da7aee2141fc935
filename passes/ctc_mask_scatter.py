"""ctc-mask-scatter: write a broadcast value into every masked row, as PyTorch does.

fairseq's ``Wav2VecCtc.get_logits`` forces blank on padded frames with
``logits[padding_mask.T] = masking_tensor`` (logits [T, B, V], masking_tensor [V]):
PyTorch broadcasts the [V] vector over the N selected frames. The TorchScript exporter
records a bool-mask ``index_put`` as a masked_scatter instead: one index row per
selected *element* (K = N * V) and, as updates, the first K elements of the flattened
values. Those hold V elements, so the graph is right only while at most one frame of
the whole batch is padded; with more, ONNX Runtime fails ("updates tensor should have
shape equal to indices.shape[:-1] + data.shape[indices.shape[-1]:]").
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from hubert_fix.analysis.dims import GraphFacts
from hubert_fix.analysis.graph import input_at, int_list, node_axes, producer, unique_name
from hubert_fix.analysis.vectors import shape_element
from hubert_fix.passes.contract import Declined, Edit, RewritePass, Scope, node_label


@dataclass(frozen=True)
class _Candidate:
    """A ScatterND in the exporter's masked_scatter form: the nodes the proof follows."""

    scatter: gs.Node
    data: gs.Tensor
    indices: gs.Tensor
    transpose: gs.Node  # indices = Transpose(NonZero(E))
    nonzero: gs.Node
    sliced: gs.Node  # updates = Slice(Reshape(values, s), ...)
    flat: gs.Node

    @property
    def name(self) -> str:
        return node_label(self.scatter)


@dataclass(frozen=True)
class _Proof:
    """What the proof found: the mask at data's rank, the mask PyTorch indexed with, the broadcast values."""

    m1: gs.Tensor  # the Where condition
    mask: gs.Tensor | None
    values: gs.Tensor
    aligned: str  # how the mask was aligned, for reports


@dataclass(frozen=True)
class _Plan:
    """One planned fix, decided before any edit."""

    scatter: gs.Node
    mask: gs.Tensor  # the mask at the data's rank (trailing dims 1): the Where condition
    values: gs.Tensor
    data: gs.Tensor
    node_name: str
    edit: Edit


class CtcMaskScatter(RewritePass):
    """Replace the exporter's masked_scatter of a broadcast value (CTC blank forcing) by a Where.

    Candidate: ``ScatterND(D, indices, updates)`` with ``indices = Transpose(NonZero(E))``
    and ``updates = Slice(Reshape(values, s), ...)``: the TorchScript exporter's
    ``masked_scatter``, its record of ``D[M] = values`` for a bool mask M (and of
    ``D.masked_scatter``). Other ScatterNDs (``x[arange, idx] = v``: Range/Concat indices;
    the dynamo exporter's updates ``Reshape(Expand(values, [N, ...]))``, which are right)
    are not candidates. The proof, each step on the graph, none on names:

    * ``reduction`` none and the Transpose's perm [1, 0];
    * ``E = Expand(M1, Shape(D))``, Shape taken of the very tensor that is D;
    * ``M1 = Unsqueeze(M)`` adding exactly D's trailing axes k..r-1 (k = rank M,
      r = rank D; axes an input from opset 13, an attribute below), the exporter's
      alignment of a lower-rank mask; or M1 is the mask itself, of rank r;
    * ``s = [-1]`` and the Slice is ``[0 : Shape(indices)[0]]`` on axis 0: the updates
      are the first K flattened values, K the number of selected elements;
    * rank(values) <= r - k (or one more, that leading dim proven 1), and each values
      dim right-aligned with D's trailing dims is 1 or proven equal.

    Then values has no axis for the selected rows: PyTorch broadcast it over every row M
    selects. **Repaired**: ``Where(M1, values, D)`` produces the ScatterND's output, that
    result for any number of selected rows (ONNX broadcasts from the right too; the same
    graph from ``D.masked_scatter(M1, values)`` agrees wherever PyTorch runs it, as
    PyTorch refuses a source shorter than K). The ScatterND and its NonZero/Expand/Slice
    chain are left dead for the runner's cleanup.

    Declined, not blocking: values with an axis for the selected rows not proven 1 (one
    value per selected element: a genuine masked_scatter), or a values dim statically
    unlike D's (a masked_scatter source): correct as exported. Declined, blocking: any
    other step fails (named, with the shapes): the values may be short, and nothing
    proves the graph right.

    Before::

        mask [T, B] -> Unsqueeze(axes=[2]) -> Expand(., Shape(logits)) -> NonZero -> Transpose -> indices [K, 3]
        values [V] -> Reshape([-1]) -> Slice([0 : K]) -> updates                 (K = N * V: short when N > 1)
        ScatterND(logits [T, B, V], indices, updates) -> [T, B, V]               (ORT fails at 2+ padded frames)

    After::

        mask [T, B] -> Unsqueeze(axes=[2]) -> [T, B, 1] -> Where(., values [V], logits [T, B, V]) -> [T, B, V]

    Idempotent: the repaired ScatterND is gone, so a second run finds no candidate.
    """

    name = "ctc-mask-scatter"

    def match(self, scope: Scope) -> Iterator[_Candidate | None]:
        return (_match(node) for node in scope.graph.nodes if node.op == "ScatterND")

    def prove(self, candidate: _Candidate, scope: Scope) -> Declined | _Proof:
        return _prove(candidate, scope.facts)

    def plan(self, candidate: _Candidate, proof: _Proof, scope: Scope) -> _Plan:
        return _plan(candidate, proof, scope.facts, scope.taken)

    def rewrite(self, plan: _Plan, graph: gs.Graph) -> None:
        _apply(plan, graph)


def _made_by(tensor: gs.Tensor, op: str) -> gs.Node | None:
    """The node producing ``tensor`` when it is an ``op``."""
    node = producer(tensor)
    return node if node is not None and node.op == op else None


def _index_mask(m1: gs.Tensor, facts: GraphFacts) -> tuple[gs.Tensor | None, str]:
    """The mask PyTorch indexed with (None: unknown), and how it was aligned (for reports).

    The exporter unsqueezes a mask of rank k < r on axes k..r-1 of the result; without
    such an Unsqueeze the mask is ``m1`` itself (any other Unsqueeze is the model's own).
    """
    unsq = _made_by(m1, "Unsqueeze")
    if unsq is None:
        return m1, "no Unsqueeze"
    axes, inner, outer = node_axes(unsq, 1), facts.rank(unsq.inputs[0]), facts.rank(m1)
    if axes is None or inner is None or not outer:
        return None, f"Unsqueeze axes {axes} of a rank {inner} mask"
    if sorted(a % outer for a in axes) == list(range(inner, outer)):
        return unsq.inputs[0], f"Unsqueeze axes {axes}"
    return m1, f"Unsqueeze axes {axes}, not the trailing axes {list(range(inner, outer))}"


def _match(scatter: gs.Node) -> _Candidate | None:
    """The exporter's masked_scatter: indices ``Transpose(NonZero(.))``, updates ``Slice(Reshape(.))``."""
    data, indices, updates = scatter.inputs  # three, as onnx.checker proved at load
    transpose, sliced = _made_by(indices, "Transpose"), _made_by(updates, "Slice")
    nonzero = _made_by(transpose.inputs[0], "NonZero") if transpose is not None else None
    flat = _made_by(sliced.inputs[0], "Reshape") if sliced is not None else None
    if nonzero is None or flat is None:
        return None
    return _Candidate(scatter, data, indices, transpose, nonzero, sliced, flat)


def _declined(c: _Candidate, step: str, blocking: bool = True) -> Declined:
    """A failed step: blocking (the values may be short), or not (a genuine masked_scatter, correct)."""
    short = "its values may be short (ONNX Runtime fails when more than one row is selected)"
    why = f"not proven a broadcast write: {step}; {short} and nothing proves the graph right"
    return Declined(c.name, "ScatterND", why if blocking else f"{step}, correct as exported", blocking)


def _prove(c: _Candidate, facts: GraphFacts) -> Declined | _Proof:
    """Each step on the graph, none on names: the write is PyTorch's broadcast of values over the masked rows."""
    expand = _mask_expand(c, facts)
    if isinstance(expand, str):
        return _declined(c, expand)
    m1 = expand.inputs[0]
    mask, aligned = _index_mask(m1, facts)
    proof = _Proof(m1, mask, c.flat.inputs[0], aligned)
    step = _rank_step(c, proof, facts) or _updates_step(c, facts) or _dtype_step(proof, facts)
    if step:
        return _declined(c, step)
    unlike = _values_step(c, proof, facts)
    return proof if unlike is None else unlike


def _mask_expand(c: _Candidate, facts: GraphFacts) -> gs.Node | str:
    """The plain scatter's ``Expand(M1, Shape(data))`` the indices select from, or the step that fails."""
    reduction = c.scatter.attrs.get("reduction", "none")
    if reduction != "none":
        return f"reduction {reduction!r}, not 'none'"
    perm = list(c.transpose.attrs.get("perm", [1, 0]))  # no perm reverses: [1, 0] for NonZero's rank 2
    if perm != [1, 0]:
        return f"indices are Transpose(NonZero) with perm {perm}, not [1, 0]"
    expand = _made_by(c.nonzero.inputs[0], "Expand")
    if expand is None:
        return "the NonZero's input is not an Expand of a mask"
    shape = _made_by(expand.inputs[1], "Shape")
    if shape is None or shape.inputs[0] is not c.data or shape.attrs.get("start", 0) or "end" in shape.attrs:
        shown = facts.describe(c.data)
        return f"the mask is expanded to a shape other than Shape(data) of this ScatterND (data {shown})"
    return expand


def _rank_step(c: _Candidate, p: _Proof, facts: GraphFacts) -> str:
    """Why the mask is not a bool index of data's leading axes, by rank ("" when it is)."""
    d = facts.describe
    r, k, rv = facts.rank(c.data), None if p.mask is None else facts.rank(p.mask), facts.rank(p.values)
    if r is None or k is None or rv is None:
        return f"ranks unknown: data {d(c.data)}, mask {d(p.m1)} ({p.aligned}), values {d(p.values)}"
    if facts.rank(p.m1) != r:
        return f"Expand aligns mask {d(p.m1)} to data {d(c.data)} from the right, not as a bool index ({p.aligned})"
    return ""


def _updates_step(c: _Candidate, facts: GraphFacts) -> str:
    """Why the updates are not the first K flattened values, K = Shape(indices)[0] ("" when they are)."""
    shape = int_list(c.flat.inputs[1])
    if shape != [-1]:
        return f"updates are sliced from Reshape(values, {shape}), not Reshape(values, [-1])"
    starts, ends, axes, steps = (input_at(c.sliced, i) for i in (1, 2, 3, 4))
    end = shape_element(facts, ends, 0)
    counted = isinstance(end, tuple) and end[0] is c.indices and end[1] == 0
    starts, axes, steps = int_list(starts), int_list(axes), int_list(steps)
    if starts != [0] or axes not in (None, [0]) or steps not in (None, [1]) or not counted:
        return "updates are not Slice(flattened values)[0 : Shape(indices)[0]] on axis 0"
    return ""


def _dtype_step(p: _Proof, facts: GraphFacts) -> str:
    """Why the mask is not a bool mask ("" when it is, or its type is unknown)."""
    dtype = facts.dtype(p.m1)
    if dtype is not None and dtype != np.bool_:  # unknown: both exporter routes here need a bool mask
        return f"mask dtype {dtype}, not bool"
    return ""


def _values_step(c: _Candidate, p: _Proof, facts: GraphFacts) -> Declined | None:
    """Whether values have no axis for the selected rows and broadcast to data's trailing dims (None: proven)."""
    d, data, values = facts.describe, c.data, p.values
    r, k, rv = facts.rank(data), facts.rank(p.mask), facts.rank(values)
    lead = rv - (r - k)  # a values axis left of data's trailing ones pairs with the selected rows
    if lead > 1 or (lead == 1 and not (facts.is_one(values, 0) and rv <= r)):
        return _declined(
            c,
            f"values {d(values)} of rank {rv} > {r - k} (data {d(data)} rank {r} - mask {d(p.mask)} rank {k}) "
            "hold one value per selected element (a genuine masked_scatter)",
            blocking=False,
        )
    tail = range(max(lead, 0), rv)  # values axis i pairs with data axis r - rv + i (right-aligned)
    pairs = ", ".join(f"{facts.dim_str(values, i)}\u2194{facts.dim_str(data, r - rv + i)}" for i in tail)
    unproven = [i for i in tail if not (facts.is_one(values, i) or facts.same_dim(values, i, data, r - rv + i))]
    v_dims, d_dims = facts.shape(values) or (), facts.shape(data) or ()
    if any(isinstance(v_dims[i], int) and isinstance(d_dims[r - rv + i], int) for i in unproven):  # both static
        return _declined(
            c,
            f"values {d(values)} do not broadcast to data {d(data)} ({pairs}): a masked_scatter source "
            "(consumed element by element)",
            blocking=False,
        )
    if unproven:
        return _declined(c, f"values {d(values)} not proven to broadcast to data {d(data)}'s trailing dims ({pairs})")
    return None


def _plan(c: _Candidate, p: _Proof, facts: GraphFacts, taken: set[str]) -> _Plan:
    """Name the Where that takes the ScatterND's place, and report it."""
    d, data, values = facts.describe, c.data, p.values
    node_name = unique_name(f"{c.name}/mask_where", taken)
    edit = Edit(
        node=c.name,
        op="ScatterND",
        before=(
            f"values {d(values)} for every row of data {d(data)} selected by mask {d(p.mask)}, recorded as a "
            "masked_scatter of the first K flattened values (K = selected elements): too few when more than "
            "one row is selected"
        ),
        after=f"Where(mask {d(p.m1)}, values {d(values)}, data {d(data)}) -> {d(data)}: values in every selected row",
        action=(
            f"replaced by Where '{node_name}' on the mask at data's rank ({p.aligned}); NonZero/Expand/Slice left dead"
        ),
    )
    return _Plan(c.scatter, p.m1, values, data, node_name, edit)


def _apply(plan: _Plan, graph: gs.Graph) -> None:
    """Produce the ScatterND's output by the Where; the ScatterND and its index chain go dead."""
    out = plan.scatter.outputs[0]
    plan.scatter.outputs.clear()
    graph.nodes.append(gs.Node("Where", plan.node_name, inputs=[plan.mask, plan.values, plan.data], outputs=[out]))
