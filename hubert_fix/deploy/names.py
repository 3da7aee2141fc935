"""Fresh names for what the deployment rewrites add to an ONNX graph."""

from __future__ import annotations

import onnx

from hubert_fix.analysis.graph import unique_name


class Names:
    """Fresh tensor and node names that collide with nothing in the graph (``unique_name``'s rule)."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.taken = {name for node in graph.node for name in (*node.input, *node.output, node.name)}
        self.taken.update(t.name for t in graph.initializer)
        self.taken.update(v.name for v in (*graph.input, *graph.output))

    def __call__(self, base: str) -> str:
        return unique_name(base, self.taken)
