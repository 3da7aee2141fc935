"""Read and replace a skeleton model's weights one tensor at a time (for ``optimize``).

A loaded model keeps its large initializers on disk (``skeleton``). Rewrites that need
a weight's values (quantization, half precision, a conv kernel laid out for a MatMul)
read that one tensor with ``pread``, and put what replaces it inline in the graph; the
weights nobody touched stay on disk and are copied file to file when the model is
written. Peak memory is the graph, the new tensors, and one weight being converted.
"""

from __future__ import annotations

import os
from collections import Counter

import numpy as np
import onnx
from onnx import numpy_helper

from hubert_fix.onnxio.reading import ModelFile


class Weights:
    """The constant tensors of ``model`` (initializers and Constant nodes), by name."""

    def __init__(self, model: ModelFile) -> None:
        self.model = model
        self.graph = model.proto.graph
        self._spans = model.spans()
        self._initializers = {t.name: t for t in self.graph.initializer}
        self._constants = {
            n.output[0]: n
            for n in self.graph.node
            if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"
        }

    @property
    def opset(self) -> int:
        """The model's version of the default ONNX domain (what forms of an op the graph may use)."""
        return next((o.version for o in self.model.proto.opset_import if o.domain in ("", "ai.onnx")), 1)

    def is_constant(self, name: str) -> bool:
        return name in self._initializers or name in self._constants

    def proto(self, name: str) -> onnx.TensorProto | None:
        """The TensorProto of a constant (a stub for weights on disk), or None."""
        if name in self._initializers:
            return self._initializers[name]
        node = self._constants.get(name)
        return node.attribute[0].t if node is not None else None

    def array(self, name: str) -> np.ndarray:
        """The values of a constant, read from disk for a stub."""
        tensor = self.proto(name)
        if tensor is None:
            raise KeyError(name)
        if name in self._spans:
            span = self._spans[name]
            with open(span.file, "rb") as handle:
                data = os.pread(handle.fileno(), span.length, span.offset)
            dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)
            return np.frombuffer(data, dtype=dtype).reshape(tuple(tensor.dims))
        return numpy_helper.to_array(tensor)

    def add(self, name: str, array: np.ndarray) -> str:
        """A new inline initializer (a fresh name is the caller's business)."""
        tensor = numpy_helper.from_array(np.ascontiguousarray(array), name)
        self.graph.initializer.append(tensor)
        self._initializers[name] = self.graph.initializer[-1]
        return name

    def drop_unused(self) -> None:
        """Remove initializers and Constant nodes that no node or output reads any more."""
        used = consumers(self.graph)
        for subgraph_node in self.graph.node:  # names read inside If/Loop bodies count too
            for attribute in subgraph_node.attribute:
                if attribute.type == onnx.AttributeProto.GRAPH:
                    used.update(name for node in attribute.g.node for name in node.input)
        # deleted in place: rebuilding the list would copy every kept tensor (a protobuf arena
        # frees nothing before the model goes: 189 MB more at base in fp16)
        for index in reversed(range(len(self.graph.initializer))):
            if not used[self.graph.initializer[index].name]:
                del self.graph.initializer[index]
        for index in reversed(range(len(self.graph.node))):
            node = self.graph.node[index]
            if node.op_type == "Constant" and not used[node.output[0]]:
                del self.graph.node[index]
        declared = {t.name for t in self.graph.initializer}
        inputs = [i for i in self.graph.input if i.name not in self._initializers or i.name in declared]
        if len(inputs) != len(self.graph.input):
            del self.graph.input[:]
            self.graph.input.extend(inputs)
        self._initializers = {t.name: t for t in self.graph.initializer}
        self._constants = {k: v for k, v in self._constants.items() if used[k]}
        self._spans = {k: v for k, v in self._spans.items() if k in self._initializers}


def consumers(graph: onnx.GraphProto) -> Counter[str]:
    """How many node inputs read each name (graph outputs count as readers)."""
    count = Counter(name for node in graph.node for name in node.input)
    count.update(o.name for o in graph.output)
    return count


def attribute(node: onnx.NodeProto, name: str, default: object = None) -> object:
    """A node attribute's value (ints as a list), or ``default``."""
    for attr in node.attribute:
        if attr.name == name:
            return onnx.helper.get_attribute_value(attr)
    return default
