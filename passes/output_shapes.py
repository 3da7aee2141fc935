"""output-shapes: an output declared with a shape the graph provably does not compute.

A graph output's declared shape is a claim of whatever wrote the file; a consumer that
reads it (an engine builder allocating outputs, a caller sizing its buffers) is misled
when the graph computes another rank, or another size on an axis both state statically.
Found by fuzzing: an output declaring four dims over a rank-3 computation was repaired
and written with the false declaration.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import onnx_graphsurgeon as gs

from hubert_fix.analysis.dims import GraphFacts
from hubert_fix.analysis.graph import unique_name
from hubert_fix.analysis.shapes import Dim
from hubert_fix.passes.contract import Edit, RewritePass, Scope


@dataclass(frozen=True)
class _Candidate:
    """An output, what it declares, and what the graph computes (the facts' dims)."""

    output: gs.Tensor
    declared: tuple[Dim | None, ...]
    computed: tuple[Dim, ...]


@dataclass(frozen=True)
class _Plan:
    output: gs.Tensor
    shape: tuple[Dim, ...]
    edit: Edit


class OutputShapes(RewritePass):
    """Declare an output with the shape the graph computes where its declaration contradicts it.

    Candidate: a graph output whose declared rank differs from the rank shape inference
    proves, or which declares a static size on an axis where the graph proves another
    static size. A declared size the graph does not prove wrong (a symbol, a size where
    inference knows none) is not a contradiction and stays.

    Repaired: the declaration becomes the computed shape: proven static sizes as they are,
    the declared symbol where the rank agrees and the declaration named one, else the
    facts' symbol (``frames``-like names from inference) or a fresh one.

    Before::

        logits: Slice(...) -> [batch, frames, 32]      declared [batch, frames, 32, 32]

    After::

        logits declared [batch, frames, 32]

    Idempotent: the declaration then agrees with the graph.
    """

    name = "output-shapes"

    def match(self, scope: Scope) -> Iterator[_Candidate | None]:
        return (_match(output, scope.facts) for output in scope.graph.outputs)

    def plan(self, candidate: _Candidate, proof: _Candidate, scope: Scope) -> _Plan:
        c = candidate
        taken = {d for t in [*scope.graph.inputs, *scope.graph.outputs] for d in (t.shape or ()) if isinstance(d, str)}
        same_rank = len(c.declared) == len(c.computed)
        shape = tuple(_dim(c, axis, same_rank, taken) for axis in range(len(c.computed)))
        edit = Edit(
            node=c.output.name,
            op="output",
            before=f"declared {_dims(c.declared)}, but the graph computes {_dims(c.computed)}",
            after=f"declared {_dims(shape)}",
            action="declared the output with the shape the graph computes",
        )
        return _Plan(c.output, shape, edit)

    def rewrite(self, plan: _Plan, graph: gs.Graph) -> None:
        plan.output.shape = list(plan.shape)


def _match(output: gs.Tensor, facts: GraphFacts) -> _Candidate | None:
    """An output whose declaration contradicts the computed rank, or a computed static size."""
    declared, computed = output.shape, facts.shape(output)
    if declared is None or computed is None:
        return None
    declared = tuple(d if isinstance(d, (int, str)) and d != "" else None for d in declared)
    if len(declared) != len(computed) or any(
        isinstance(d, int) and isinstance(c, int) and d != c for d, c in zip(declared, computed)
    ):
        return _Candidate(output, declared, tuple(computed))
    return None


def _dim(c: _Candidate, axis: int, same_rank: bool, taken: set[str]) -> Dim:
    """One axis of the new declaration: a proven size; else the declared symbol (same rank); else the
    facts' symbol where it names something (a declared dim, a proven root), or a fresh one."""
    computed = c.computed[axis]
    if isinstance(computed, int):
        return computed
    declared = c.declared[axis] if same_rank else None
    if isinstance(declared, str):
        return declared
    named = computed.isidentifier() and not computed.startswith("unk__")  # ONNX's unk__N names nothing
    return computed if named else unique_name(f"{c.output.name}_dim{axis}", taken)


def _dims(shape: tuple[Dim | None, ...]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"
