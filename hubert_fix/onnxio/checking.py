"""What onnx.checker and ONNX Runtime are given to check a model: its weightless twin, in topological order."""

from __future__ import annotations

import heapq

import onnx

from hubert_fix.onnxio import skeleton


def checkable(model: onnx.ModelProto) -> onnx.ModelProto:
    """The weightless twin, with an empty shape where an input or output declares none, and
    its nodes in topological order.

    onnx.checker insists on a shape field for graph inputs and outputs; ONNX Runtime
    (and the ONNX spec's "unknown rank") accept its absence, and so do we. It insists on
    sorted nodes too, which ONNX Runtime does not need: ``onnxruntime.transformers.float16``
    appends the Casts of the inputs after every other node. Such a file is not damaged;
    the node-order pass sorts it.
    """
    twin = skeleton.weightless(model)
    for info in [*twin.graph.input, *twin.graph.output]:
        if info.type.HasField("tensor_type") and not info.type.tensor_type.HasField("shape"):
            info.type.tensor_type.shape.SetInParent()
    order = topological_order(twin.graph)
    if order != list(range(len(twin.graph.node))):
        nodes = [twin.graph.node[i] for i in order]
        del twin.graph.node[:]
        twin.graph.node.extend(nodes)
    return twin


def topological_order(graph: onnx.GraphProto) -> list[int]:
    """The graph's node indices, each after the nodes producing its inputs, otherwise in file
    order (stable: a sorted graph keeps its order). Nodes that can never run (a cycle, a
    tensor produced twice) come last, in file order, for the checker to name."""
    producer: dict[str, int] = {}
    for index, node in enumerate(graph.node):
        for name in node.output:
            producer.setdefault(name, index)
    needs = [{producer[name] for name in node.input if name in producer} - {i} for i, node in enumerate(graph.node)]
    users: dict[int, list[int]] = {}
    for index, deps in enumerate(needs):
        for dep in deps:
            users.setdefault(dep, []).append(index)
    missing = [len(deps) for deps in needs]
    ready = [index for index, count in enumerate(missing) if count == 0]
    heapq.heapify(ready)
    order: list[int] = []
    while ready:
        index = heapq.heappop(ready)
        order.append(index)
        for user in users.get(index, ()):
            missing[user] -= 1
            if missing[user] == 0:
                heapq.heappush(ready, user)
    placed = set(order)
    return order + [i for i in range(len(graph.node)) if i not in placed]
