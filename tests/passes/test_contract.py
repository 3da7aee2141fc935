"""The pass contract (passes/contract.py): a pass that breaks it is a bug, reported as one (exit 4)."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from onnx_builders import where_model

from hubert_fix.analysis.dims import analyze
from hubert_fix.passes import DEFAULT_PASSES
from hubert_fix.passes.contract import Declined, Edit, PassContractError, RewritePass


def _graph() -> gs.Graph:
    return gs.import_onnx(where_model(["batch", "frames"], ["batch", "frames", 8]))


class _EditsWhileFinding(RewritePass):
    name = "edits-while-finding"

    def match(self, scope):
        scope.graph.nodes[0].name = "renamed"  # finding must never edit
        return []


class _Plan:
    def __init__(self, action: str) -> None:
        self.edit = Edit("n", "Where", "before", "after", action)


class _ClaimsAnEdit(RewritePass):
    """Plans an edit whose rewrite changes nothing."""

    name = "claims-an-edit"

    def match(self, scope):
        return ["a candidate"]

    def plan(self, candidate, proof, scope):
        return _Plan("nothing")

    def rewrite(self, plan, graph):
        pass


class _CutsAWire(RewritePass):
    name = "cuts-a-wire"

    def match(self, scope):
        return ["a candidate"]

    def plan(self, candidate, proof, scope):
        return _Plan("drops the condition's producer")

    def rewrite(self, plan, graph):
        where = next(n for n in graph.nodes if n.op == "Where")
        where.inputs[0] = gs.Variable("nowhere", dtype=np.bool_)


class _OnlyReports(RewritePass):
    name = "only-reports"

    def match(self, scope):
        return [Declined("n", "Where", "looked, left alone"), None]


class _ProvesWithoutAPlan(RewritePass):
    name = "proves-without-a-plan"

    def match(self, scope):
        return ["a candidate"]


def test_a_proof_needs_a_plan() -> None:
    graph = _graph()
    with pytest.raises(PassContractError, match="no plan for"):
        _ProvesWithoutAPlan().run(graph, analyze(graph), apply=False)


@pytest.mark.parametrize("apply", [False, True])
def test_finding_never_edits(apply: bool) -> None:
    graph = _graph()
    with pytest.raises(PassContractError, match="edited the graph without saying so"):
        _EditsWhileFinding().run(graph, analyze(graph), apply=apply)


def test_modified_means_changed() -> None:
    graph = _graph()
    with pytest.raises(PassContractError, match="which is unchanged"):
        _ClaimsAnEdit().run(graph, analyze(graph), apply=True)
    assert _ClaimsAnEdit().run(graph, analyze(graph), apply=False).edits  # planned, not made: fine


def test_a_rewrite_leaves_the_graph_whole() -> None:
    graph = _graph()
    with pytest.raises(PassContractError, match="nothing provides: nowhere"):
        _CutsAWire().run(graph, analyze(graph), apply=True)


def test_a_pass_starts_on_a_whole_graph() -> None:
    graph = _graph()
    next(n for n in graph.nodes if n.op == "Where").inputs[0] = gs.Variable("lost", dtype=np.bool_)
    with pytest.raises(PassContractError, match="reads tensors nothing provides: lost"):
        _OnlyReports().run(graph, analyze(graph), apply=True)


def test_a_pass_that_only_reports_keeps_its_contract() -> None:
    graph = _graph()
    result = _OnlyReports().run(graph, analyze(graph), apply=True)
    assert not result.modified and [d.reason for d in result.declined] == ["looked, left alone"]


@pytest.mark.parametrize("rewrite_pass", DEFAULT_PASSES, ids=lambda p: p.name)
def test_every_pass_keeps_the_contract_on_a_repairable_model(rewrite_pass: RewritePass) -> None:
    model = where_model(["batch", "frames"], ["batch", "frames", 8])
    onnx.checker.check_model(model)
    graph = gs.import_onnx(model)
    first = rewrite_pass.run(graph, analyze(graph), apply=True)  # raises PassContractError when broken
    second = rewrite_pass.run(graph, analyze(graph), apply=True)
    assert not second.modified and not second.edits  # idempotent
    assert first.modified == bool(first.edits)
