"""where-broadcast: align a lower-rank Where condition to the left, as PyTorch meant it.

fairseq writes ``x[padding_mask] = 0`` with a bool mask ``[B, T]`` on ``x [B, T, C]``.
PyTorch indexes *from the left* (mask axis i is x axis i); torch.onnx.export emits
``Where(mask, 0, x)`` with no Unsqueeze, and ONNX broadcasting aligns *from the right*
(mask axis i is x axis rd-rc+i). ORT then rejects the model ("condition operand cannot
broadcast on dim 1"), or, when T == C, silently masks channels instead of frames.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from hubert_fix.analysis.dims import GraphFacts
from hubert_fix.analysis.graph import unique_name
from hubert_fix.passes.contract import Declined, Edit, RewritePass, Scope, node_label


@dataclass(frozen=True)
class _Candidate:
    """A Where whose condition has a lower rank than its data operand: what the decision reads."""

    where: gs.Node
    cond: gs.Tensor
    data: gs.Tensor  # the higher-rank of X and Y
    rc: int
    rd: int

    @property
    def name(self) -> str:
        return node_label(self.where)


@dataclass(frozen=True)
class _Plan:
    """One planned fix: everything needed to apply it, decided before any edit."""

    where: gs.Node
    axes: list[int]
    node_name: str
    output_name: str
    axes_name: str
    edit: Edit


class WhereBroadcast(RewritePass):
    """Unsqueeze a Where condition whose rank is lower than its data, when it is left-aligned.

    Candidate: a ``Where(cond, X, Y)`` whose condition has rank rc lower than the rank rd
    of its data operand (the higher-rank of X and Y). Each condition axis i is compared,
    on proven facts only (see ``hubert_fix.analysis.dims``), with:

    * data axis i (*left-aligned*, PyTorch's boolean-mask indexing), and
    * data axis rd-rc+i (*right-aligned*, ONNX broadcasting; a condition dim proven to
      be 1 also counts as right-aligned).

    Decisions:

    * left proven on every axis, right not: **repaired** by inserting
      ``Unsqueeze(cond, axes=[rc, ..., rd-1])`` (``axes`` attribute below opset 13, an
      int64 constant input from 13). No Expand is needed: the leading dims are proven
      equal to the data's and the new trailing dims are 1, so ONNX broadcasting of the
      condition yields exactly the data shape;
    * right proven: the model already broadcasts as written; declined, not blocking;
    * both proven (e.g. static T == C with B == 1): the two readings differ and the
      graph does not say which one was meant; declined, blocking;
    * left not proven on some axis: declined, blocking, naming the axes and dims;
      except when every unproven axis pairs unnamed dynamic dims of graph inputs (an
      export without dim names: nothing can prove that ``source`` and ``padding_mask``
      share the batch) *and* the right-aligned reading pairs a dynamic condition dim
      with a static data dim > 1 (it would need the frame count to equal C on every
      input, which cannot be the model's design): **repaired** left-aligned, the
      assumption stated in the edit;
    * an operand of unknown rank (a model whose inputs declare no shapes): declined,
      blocking; a Where that cannot be examined cannot be claimed correct.

    Before::

        mask [batch, frames] ----------------------> Where -> [?]   (ORT: cannot broadcast)
        x    [batch, frames, 32] ------------------/

    After::

        mask [batch, frames] -> Unsqueeze(axes=[2]) -> [batch, frames, 1] -> Where -> [batch, frames, 32]
        x    [batch, frames, 32] ----------------------------------------/

    Idempotent: after the repair condition and data have equal ranks, so the Where is no
    longer a candidate.
    """

    name = "where-broadcast"

    def match(self, scope: Scope) -> Iterator[_Candidate | Declined | None]:
        return (
            _match(where, scope.facts) for where in scope.graph.nodes if where.op == "Where"
        )  # Declined: rank unknown

    def prove(self, candidate: _Candidate, scope: Scope) -> Declined | str:
        return _prove(candidate, scope.facts)

    def plan(self, candidate: _Candidate, assumption: str, scope: Scope) -> _Plan:
        return _plan(candidate, assumption, scope.facts, scope.graph.opset, scope.taken)

    def rewrite(self, plan: _Plan, graph: gs.Graph) -> None:
        _apply(plan, graph)


def _match(where: gs.Node, facts: GraphFacts) -> _Candidate | Declined | None:
    """A Where whose condition has a lower rank than its data is a candidate; with a rank unknown, it is declined."""
    cond, x, y = where.inputs[0], where.inputs[1], where.inputs[2]
    rc, rx, ry = facts.rank(cond), facts.rank(x), facts.rank(y)
    if rc is None or rx is None or ry is None:
        ranks = ", ".join(f"{role} {'?' if r is None else r}" for role, r in (("condition", rc), ("X", rx), ("Y", ry)))
        return Declined(
            node=node_label(where),
            op="Where",
            reason=(
                f"cannot tell whether it broadcasts correctly: shape inference could not tell the operand "
                f"ranks ({ranks}); give the model's inputs shapes (at least their ranks) and run again"
            ),
            blocking=True,
        )
    data, rd = (x, rx) if rx >= ry else (y, ry)
    return _Candidate(where, cond, data, rc, rd) if rc < rd else None


def _pairs(facts: GraphFacts, c: _Candidate, offset: int) -> str:
    """Condition axis i paired with data axis offset + i, for reports (0: left-aligned, rd - rc: right)."""
    return ", ".join(f"{facts.dim_str(c.cond, i)}\u2194{facts.dim_str(c.data, offset + i)}" for i in range(c.rc))


def _prove(c: _Candidate, facts: GraphFacts) -> Declined | str:
    """Only a left alignment proven (or safely assumed) is repaired: the assumption it rests on ("" if none)."""
    cond, data, rc, rd = c.cond, c.data, c.rc, c.rd
    left = [facts.same_dim(cond, i, data, i) for i in range(rc)]
    right = [facts.is_one(cond, i) or facts.same_dim(cond, i, data, rd - rc + i) for i in range(rc)]
    cond_s, data_s = facts.describe(cond), facts.describe(data)
    right_pairs, left_pairs = _pairs(facts, c, rd - rc), _pairs(facts, c, 0)
    if all(right) and all(left):
        return Declined(
            node=c.name,
            op="Where",
            reason=(
                f"ambiguous: condition {cond_s} vs data {data_s} matches both left-aligned "
                f"({left_pairs}) and right-aligned ({right_pairs}) broadcasting, which give "
                "different results; cannot tell which was meant"
            ),
            blocking=True,
        )
    if all(right):
        return Declined(
            node=c.name,
            op="Where",
            reason=f"already broadcasts correctly: condition {cond_s} vs data {data_s} ({right_pairs})",
            blocking=False,
        )
    return "" if all(left) else _assume_left(c, facts, [i for i in range(rc) if not left[i]])


def _assume_left(c: _Candidate, facts: GraphFacts, axes_unproven: list[int]) -> Declined | str:
    """Left alignment unproven: assumed only for unnamed input dims when the right reading is refuted."""
    cond, data = c.cond, c.data
    unproven = ", ".join(f"axis {i}: {facts.dim_str(cond, i)} vs {facts.dim_str(data, i)}" for i in axes_unproven)
    unnamed = _unnamed_input_dims(facts, [(t, i) for i in axes_unproven for t in (cond, data)])
    refuted = _right_refuted(facts, cond, data, c.rc, c.rd)
    if unnamed and refuted:
        return (
            f"left-aligned although {unproven} are unnamed dims of different graph inputs, which nothing "
            f"proves equal: PyTorch's boolean-mask indexing is left-aligned by definition, and the "
            f"right-aligned reading would need {refuted} on every input; give the dims one name "
            "(onnx.tools.update_model_dims) to make this a proof"
        )
    hint = (
        "; these dims are unnamed dims of different graph inputs, which nothing proves equal: give "
        "them one name (e.g. 'batch', with onnx.tools.update_model_dims) and run again"
        if unnamed
        else _folded(c, facts, axes_unproven)
    )
    reason = (
        f"condition {facts.describe(cond)} vs data {facts.describe(data)}: neither alignment proven; left-aligned "
        f"dims not proven equal on {unproven}{hint}"
    )
    return Declined(node=c.name, op="Where", reason=reason, blocking=True)


def _folded(c: _Candidate, facts: GraphFacts, axes_unproven: list[int]) -> str:
    """Why a condition axis is a constant where the data's is dynamic, when that constant is a width
    the right-aligned reading pairs with it ("" otherwise): a tool folded the merged shapes."""
    widths = {w for w in (_static(facts, c.data, a) for a in range(c.rd - c.rc, c.rd)) if w is not None and w > 1}
    for i in axes_unproven:
        width = _static(facts, c.cond, i)
        if width in widths and _static(facts, c.data, i) is None:
            return (
                f"; the condition's axis {i} is the constant {width}, the data's width, where the data's dim is "
                f"dynamic: a tool that read this Where as right-aligned broadcasting (which ties that axis to "
                f"{width}) folded the shapes into constants (polygraphy surgeon sanitize --fold-constants, a "
                f"simplifier after symbolic shape inference), and the graph now computes for {width} frames "
                "only, which cannot be given back; repair the file from before that tool (hubert-fix repair), "
                "then run the tool on the repaired file"
            )
    return ""


def _plan(c: _Candidate, assumption: str, facts: GraphFacts, opset: int, taken: set[str]) -> _Plan:
    """Name the Unsqueeze that appends the data's trailing axes to the condition, and report it."""
    axes = list(range(c.rc, c.rd))
    node_name = unique_name(f"{c.name}/cond_unsqueeze", taken)
    output_name = unique_name(f"{node_name}_output_0", taken)
    axes_name = unique_name(f"{node_name}_axes", taken)
    cond_s, data_s = facts.describe(c.cond), facts.describe(c.data)
    after_dims = [facts.dim_str(c.cond, i) for i in range(c.rc)] + ["1"] * (c.rd - c.rc)
    form = "attribute" if opset < 13 else "input"
    edit = Edit(
        node=c.name,
        op="Where",
        before=f"condition {cond_s} vs data {data_s} (right-aligned: {_pairs(facts, c, c.rd - c.rc)})",
        after=f"condition [{', '.join(after_dims)}] broadcasts to {data_s}",
        action=f"inserted Unsqueeze '{node_name}' (axes={axes} as {form}) on the condition",
        assumption=assumption,
    )
    return _Plan(c.where, axes, node_name, output_name, axes_name, edit)


def _unnamed_input_dims(facts: GraphFacts, dims: list[tuple[gs.Tensor, int]]) -> bool:
    """True when every one of ``dims`` comes unchanged from an unnamed dynamic dim of a graph input."""
    inputs = {t.name for t in facts.graph.inputs}
    roots = [facts.root(tensor, axis) for tensor, axis in dims]
    return all(isinstance(r, tuple) and r[0] in inputs for r in roots)


def _static(facts: GraphFacts, tensor: gs.Tensor, axis: int) -> int | None:
    """The dim's size when it is proven static."""
    dim = facts.shape(tensor)
    value = None if dim is None else dim[axis]
    return value if isinstance(value, int) else None


def _right_refuted(facts: GraphFacts, cond: gs.Tensor, data: gs.Tensor, rc: int, rd: int) -> str:
    """Why the right-aligned reading cannot be what the model means ("" when nothing refutes it).

    It is refuted when it pairs a dynamic condition dim with a static data dim > 1: the
    broadcast would then only work for the inputs where that dynamic dim happens to equal
    the constant (frames == C), never as a design.
    """
    for i in range(rc):
        width = _static(facts, data, rd - rc + i)
        if width is not None and width > 1 and _static(facts, cond, i) is None:
            return f"the dynamic dim {facts.dim_str(cond, i)} to equal {width}"
    return ""


def _apply(plan: _Plan, graph: gs.Graph) -> None:
    """Insert the planned Unsqueeze and rewire only this Where's condition."""
    cond = plan.where.inputs[0]
    out = gs.Variable(plan.output_name, dtype=np.bool_)
    if graph.opset < 13:
        node = gs.Node("Unsqueeze", plan.node_name, attrs={"axes": plan.axes}, inputs=[cond], outputs=[out])
    else:
        axes = gs.Constant(plan.axes_name, np.array(plan.axes, dtype=np.int64))
        node = gs.Node("Unsqueeze", plan.node_name, inputs=[cond, axes], outputs=[out])
    plan.where.inputs[0] = out
    graph.nodes.append(node)
