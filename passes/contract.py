"""What a rewrite pass is and what it reports.

A pass (a ``RewritePass``) finds one kind of defect in an onnx-graphsurgeon graph and,
when asked, repairs it in place. Finding and fixing share one code path: ``find`` matches,
proves and plans each candidate (the pass's ``match``, ``prove`` and ``plan``) without
editing, ``rewrite`` carries out a plan; ``check``
and ``repair`` both run the passes with ``apply=True`` on their own copy of the graph, so
``check`` reports exactly what ``repair`` does. Every candidate the pass looked at and did
not repair is reported with the reason. ``RewritePass.run`` checks each pass's pre- and
postconditions.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar

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


@dataclass
class Scope:
    """What one pass's steps read while finding: the graph, its facts, and the node and tensor
    names in use (a plan reserves the names it will add, ``analysis.graph.unique_name``)."""

    graph: gs.Graph
    facts: GraphFacts
    taken: set[str]


class PassContractError(AssertionError):
    """A pass broke its contract (a bug in hubert-fix, never a verdict on the model: exit 4)."""


def _fingerprint(graph: gs.Graph) -> tuple[object, ...]:
    """What a pass may change, cheaply: every node's op, name, wiring and attribute identities,
    and the graph's inputs and outputs with their declared shapes. Equal fingerprints: the
    pass edited nothing."""
    nodes = tuple(
        (
            node.op,
            node.name,
            tuple(t.name for t in node.inputs),
            tuple(t.name for t in node.outputs),
            tuple((key, id(value)) for key, value in sorted(node.attrs.items())),
        )
        for node in graph.nodes
    )
    interface = [*graph.inputs, *graph.outputs]  # the only declared shapes a pass may edit
    shapes = tuple((t.name, None if t.shape is None else tuple(t.shape)) for t in interface)
    return nodes, tuple(t.name for t in graph.inputs), tuple(t.name for t in graph.outputs), shapes


def _dangling(graph: gs.Graph) -> list[str]:
    """Tensors a node reads that nothing provides: not a graph input, a constant, or a node's output."""
    provided = {t.name for t in graph.inputs} | {t.name for node in graph.nodes for t in node.outputs}
    return sorted(
        {
            t.name
            for node in graph.nodes
            for t in node.inputs
            if t.name and not isinstance(t, gs.Constant) and t.name not in provided
        }
    )


class RewritePass(abc.ABC):
    """The contract of every pass: a rule in three steps (onnxscript's rewrite rules: ``pattern``,
    ``check``, ``rewrite``), with onnx-ir's ``requires`` and ``ensures`` around them.

    ``match`` finds the pattern, ``prove`` establishes what a repair may rest on, ``plan``
    decides the repair, all before any edit (``find`` runs the three over every candidate);
    ``rewrite`` carries out a plan. ``run`` checks before the pass that the graph is well
    formed (``requires``) and after it (``ensures``) that it still is, that finding edited
    nothing, and that ``modified`` says whether the graph changed. A broken contract raises
    PassContractError: a bug in the pass, reported as one.
    """

    name: ClassVar[str]

    @abc.abstractmethod
    def match(self, scope: Scope) -> Iterable[Any]:
        """The pattern: per candidate, the candidate, a Declined (a defect the pass cannot even
        examine, with why), or None (not a candidate)."""

    def prove(self, candidate: Any, scope: Scope) -> Any:
        """What a repair of ``candidate`` may rest on, a Declined (with why, and whether it blocks),
        or None (not the defect after all: nothing to report). By default the match is the proof."""
        return candidate

    def plan(self, candidate: Any, proof: Any, scope: Scope) -> Plan:
        """The repair the proof allows, with its ``edit`` for the report (a pass that only reports has none)."""
        raise PassContractError(f"{self.name}: proved a candidate it has no plan for")

    def rewrite(self, plan: Plan, graph: gs.Graph) -> None:
        """Carry out one plan (a pass that only reports has none)."""
        raise PassContractError(f"{self.name}: planned an edit it cannot make")

    def find(self, graph: gs.Graph, facts: GraphFacts) -> list[Plan | Declined]:
        """Match, prove and plan every candidate; a candidate declined while matching or while
        proving is reported as such. Nothing is edited."""
        scope = Scope(graph, facts, taken_names(graph))
        outcomes: list[Plan | Declined] = []
        for candidate in self.match(scope):
            if isinstance(candidate, Declined):
                outcomes.append(candidate)
            elif candidate is not None:
                proof = self.prove(candidate, scope)
                if isinstance(proof, Declined):
                    outcomes.append(proof)
                elif proof is not None:
                    outcomes.append(self.plan(candidate, proof, scope))
        return outcomes

    def run(self, graph: gs.Graph, facts: GraphFacts, *, apply: bool) -> PassResult:
        """Find the pattern in ``graph``; with ``apply`` also repair it in place.

        Declined candidates are reported, never repaired; those with ``blocking`` set
        make ``repair`` refuse to write (exit 3).
        """
        self.requires(graph)
        before = _fingerprint(graph)
        result = settle(self.name, self.find(graph, facts), lambda plan: self.rewrite(plan, graph), apply=apply)
        self.ensures(graph, result, changed=_fingerprint(graph) != before, apply=apply)
        return result

    def requires(self, graph: gs.Graph) -> None:
        """Precondition: every tensor a node reads is provided (the previous pass left a whole graph)."""
        dangling = _dangling(graph)
        if dangling:
            raise PassContractError(f"{self.name}: the graph reads tensors nothing provides: {', '.join(dangling[:5])}")

    def ensures(self, graph: gs.Graph, result: PassResult, *, changed: bool, apply: bool) -> None:
        """Postconditions: finding edits nothing; ``modified`` is true exactly when the graph
        changed, and then with edits to show for it; the graph is still whole."""
        if changed != result.modified:
            what = "edited the graph without saying so" if changed else "says it edited the graph, which is unchanged"
            raise PassContractError(f"{self.name}: {what} (apply={apply})")
        if result.modified and not result.edits:
            raise PassContractError(f"{self.name}: modified the graph with no edit to report")
        dangling = _dangling(graph)
        if dangling:
            raise PassContractError(f"{self.name}: left tensors that nothing provides: {', '.join(dangling[:5])}")


def node_label(node: gs.Node) -> str:
    """How reports name a node: its name, or its first output's name if it has none."""
    return node.name or node.outputs[0].name


def taken_names(graph: gs.Graph) -> set[str]:
    """Every node and tensor name in use, for ``analysis.graph.unique_name``."""
    names = {n.name for n in graph.nodes}
    names.update(graph.tensors().keys())
    return names
