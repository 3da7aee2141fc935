"""What a rewrite pass is and what it reports.

A pass finds one kind of defect in an onnx-graphsurgeon graph and, when asked,
repairs it in place. Finding and fixing share one code path (``apply=False`` finds and
plans, ``apply=True`` also edits); ``check`` and ``repair`` both run the passes with
``apply=True`` on their own copy of the graph, so ``check`` reports exactly what
``repair`` does.
Every candidate the pass looked at and did not repair is reported with the reason.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Protocol, TypeVar

import onnx_graphsurgeon as gs

if TYPE_CHECKING:
    from hubert_fix.analysis.dims import GraphFacts


@dataclass(frozen=True)
class Edit:
    """One repair, planned (check) or made (repair)."""

    node: str  # name of the node the edit is about
    op: str  # its op type
    before: str  # the defect, with shapes and symbolic dims
    after: str  # the shapes once repaired
    action: str  # what is inserted or rewired
    assumption: str = ""  # what the edit takes as given where the graph cannot prove it

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass(frozen=True)
class Declined:
    """A candidate the pass looked at and left alone, and why (with the dims compared).

    ``blocking`` is True when the candidate may be a defect that stays in the graph
    (``repair`` then refuses to write and exits 3); False when it was found to be fine.
    """

    node: str
    op: str
    reason: str
    blocking: bool = False

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class PassResult:
    """What one pass found: ``modified`` is true only when the graph was really edited."""

    name: str
    modified: bool = False
    edits: list[Edit] = field(default_factory=list)
    declined: list[Declined] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return {
            "pass": self.name,
            "modified": self.modified,
            "edits": [e.to_dict() for e in self.edits],
            "declined": [d.to_dict() for d in self.declined],
        }


class Pass(Protocol):
    """A rewrite pass. ``name`` is its CLI name (``--skip NAME``); the docstring is its help."""

    name: str

    def run(self, graph: gs.Graph, facts: GraphFacts, *, apply: bool) -> PassResult:
        """Find the pattern in ``graph``; with ``apply`` also repair it in place.

        Declined candidates are reported, never repaired; those with ``blocking`` set
        make ``repair`` refuse to write (exit 3).
        """
        ...


class Plan(Protocol):
    """One repair decided before any edit: what it will do (``edit``), ready to apply."""

    edit: Edit


P = TypeVar("P", bound=Plan)


def settle(
    name: str, outcomes: Iterable[P | Declined | None], apply_plan: Callable[[P], None], *, apply: bool
) -> PassResult:
    """Collect a pass's per-candidate outcomes; with ``apply``, carry out every plan.

    All candidates are examined before the first edit, so check (``apply=False``) and
    repair report exactly the same edits.
    """
    result = PassResult(name=name)
    plans: list[P] = []
    for outcome in outcomes:
        if isinstance(outcome, Declined):
            result.declined.append(outcome)
        elif outcome is not None:
            plans.append(outcome)
            result.edits.append(outcome.edit)
    if apply:
        for plan in plans:
            apply_plan(plan)
        result.modified = bool(plans)
    return result


def node_label(node: gs.Node) -> str:
    """How reports name a node: its name, or its first output's name if it has none."""
    return node.name or node.outputs[0].name


def taken_names(graph: gs.Graph) -> set[str]:
    """Every node and tensor name in use, for ``unique_name``."""
    names = {n.name for n in graph.nodes}
    names.update(graph.tensors().keys())
    return names


def unique_name(base: str, taken: set[str]) -> str:
    """``base`` or ``base_1``, ``base_2``...: deterministic and unused; reserves it in ``taken``."""
    name, k = base, 0
    while name in taken:
        k += 1
        name = f"{base}_{k}"
    taken.add(name)
    return name
