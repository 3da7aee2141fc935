"""node-order: put the nodes of a graph in topological order, as the ONNX spec requires.

``onnxruntime.transformers.float16.convert_float_to_float16(model, keep_io_types=True)``
appends the Casts of the model's inputs after every other node, so the first node of the
graph reads a tensor that a later one writes. ONNX Runtime sorts for itself and loads it;
onnx.checker ("Nodes in a graph must be topologically sorted"), and tools that read a
graph in file order, refuse it.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx_graphsurgeon as gs

from hubert_fix.passes.contract import Edit, RewritePass, Scope, node_label


@dataclass(frozen=True)
class _Candidate:
    """The first node that reads what a later node writes."""

    index: int
    node: gs.Node
    writer: gs.Node
    writer_index: int
    tensor: gs.Tensor


@dataclass(frozen=True)
class _Plan:
    edit: Edit


class NodeOrder(RewritePass):
    """Sort the graph's nodes topologically when some node comes before a node it reads from.

    Candidate: the first node that reads a tensor a later node produces. The order of
    nodes carries no meaning in ONNX beyond the requirement that producers come first,
    so sorting changes nothing the model computes (onnx-graphsurgeon's ``toposort``).

    Before::

        /feature_extractor/Unsqueeze(graph_input_cast_0)  ...  graph_input_cast0: Cast(source) -> graph_input_cast_0

    After::

        graph_input_cast0: Cast(source) -> graph_input_cast_0;  /feature_extractor/Unsqueeze(graph_input_cast_0)  ...

    Idempotent: a sorted graph is not a candidate.
    """

    name = "node-order"

    def match(self, scope: Scope) -> list[_Candidate]:
        """One candidate for the whole graph: its first node read before it is written (the match
        is the proof: order carries no meaning beyond producers first)."""
        nodes = scope.graph.nodes
        position = {id(node): index for index, node in enumerate(nodes)}
        for index, node in enumerate(nodes):
            late = [t for t in node.inputs if t.inputs and position.get(id(t.inputs[0]), -1) > index]
            if late:
                writer = late[0].inputs[0]
                return [_Candidate(index, node, writer, position[id(writer)], late[0])]
        return []

    def plan(self, candidate: _Candidate, proof: _Candidate, scope: Scope) -> _Plan:
        c = candidate
        edit = Edit(
            node=node_label(c.node),
            op=c.node.op,
            before=(
                f"node {c.index} reads {c.tensor.name}, which node {c.writer_index} ({node_label(c.writer)}) "
                "writes: not in topological order (onnx.checker refuses it)"
            ),
            after="every node after the nodes it reads from",
            action=f"sorted the {len(scope.graph.nodes)} nodes topologically",
        )
        return _Plan(edit)

    def rewrite(self, plan: _Plan, graph: gs.Graph) -> None:
        graph.toposort(mode="nodes")
