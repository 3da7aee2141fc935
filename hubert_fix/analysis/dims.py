"""Symbolic dimension facts: which dims of which tensors are *proven* equal.

The passes decide on proven facts only. ONNX shape inference alone is not enough:
a Slice with dynamic ends (HuBERT's ``padding_mask[:, :-extra]``) makes it invent a
fresh ``unk__N`` symbol for every dim of its output, so the Where condition built
from the mask looks like ``[unk__8, unk__7]`` although its first axis is ``batch``.
:func:`analyze` therefore combines two sources:

* the dims ONNX shape inference (``data_prop=True``) gives each tensor, used as is
  when they are static or symbolic (a model-declared ``dim_param`` such as ``batch``
  is equal to itself everywhere; an invented ``unk__N`` only to the same ``unk__N``);
* a *provenance walk* from ``(tensor, axis)`` back through ops that provably carry
  that axis unchanged (elementwise ops, Transpose, Reduce*, Slice on other axes,
  Squeeze/Unsqueeze, Reshape whose shape vector is traced from ``Shape``, ...). Two
  dims whose walks end at the same root are equal. The walk stops at any op it does
  not know, so an unknown op can only make *fewer* dims equal, never more.

The graph is never modified: inference runs on a separate, weight-free export.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx_graphsurgeon as gs

from hubert_fix.analysis.shapes import Dim, inferred_shapes
from hubert_fix.analysis.steps import walk_step
from hubert_fix.analysis.vectors import scalar_element, shape_element, vector_length
from hubert_fix.analysis.walk import Root

# ------------------------------------------------------------------------ the facts


@dataclass
class GraphFacts:
    """Shapes of a graph's tensors and a provenance walk to prove dims equal."""

    graph: gs.Graph
    inferred: dict[str, tuple[Dim | None, ...] | None]
    declared: frozenset[str]  # dim_params named by the model's inputs/outputs
    _roots: dict[tuple[str, int], Root] = field(default_factory=dict, repr=False)
    _active: set[tuple[str, int]] = field(default_factory=set, repr=False)

    # ---- public interface

    def shape(self, tensor: gs.Tensor) -> tuple[Dim, ...] | None:
        """The dims of ``tensor`` (None when its rank is unknown).

        A dim the walk proves static or model-declared is shown that way even where
        inference lost it; the others keep ONNX's symbol or a label naming their root.
        """
        raw = self._raw_shape(tensor)
        if raw is None:
            return None
        return tuple(self._label(tensor, axis, d) for axis, d in enumerate(raw))

    def rank(self, tensor: gs.Tensor) -> int | None:
        raw = self._raw_shape(tensor)
        return None if raw is None else len(raw)

    def dtype(self, tensor: gs.Tensor) -> np.dtype | None:
        """The element type when gs knows it (declared, constant or set by the exporter)."""
        dtype = getattr(tensor, "dtype", None)
        if dtype is None:
            return None
        try:
            return np.dtype(dtype)
        except TypeError:
            return None

    def same_dim(self, a: gs.Tensor, axis_a: int, b: gs.Tensor, axis_b: int) -> bool:
        """True only when ``a.shape[axis_a] == b.shape[axis_b]`` is proven for every input."""
        da, db = self._raw_dim(a, axis_a), self._raw_dim(b, axis_b)
        if da is not None and da == db:
            return True  # equal static sizes, or the very same symbol
        ra, rb = self.root(a, axis_a), self.root(b, axis_b)
        return ra is not None and ra == rb

    def value_is_dim(self, scalar: gs.Tensor, tensor: gs.Tensor, axis: int) -> bool:
        """True when the one-element integer ``scalar`` is proven to equal ``tensor.shape[axis]``.

        ``scalar`` must be traced to a shape element (``Gather(Shape(T), k)``, a
        ``Shape(T, start, end)`` slice, through Cast/Squeeze/...) of a dim proven equal.
        """
        step = scalar_element(self, scalar)
        if isinstance(step, int):
            return self._raw_dim(tensor, axis) == step
        return step is not None and self.same_dim(step[0], step[1], tensor, axis)

    def scalar_dim(self, scalar: gs.Tensor) -> Dim | None:
        """The dim a one-element integer is traced to (``Gather(Shape(T), k)``, ...): its
        static size, or its symbol; None when it is not a shape element."""
        step = scalar_element(self, scalar)
        if step is None and vector_length(self, scalar) == 1:
            step = shape_element(self, scalar, 0)
        if isinstance(step, int) or step is None:
            return step
        return self.shape(step[0])[step[1]] if self.shape(step[0]) is not None else None

    def is_one(self, tensor: gs.Tensor, axis: int) -> bool:
        """True when the dim is proven to be 1 (broadcast-neutral)."""
        return self._raw_dim(tensor, axis) == 1 or self.root(tensor, axis) == 1

    def describe(self, tensor: gs.Tensor) -> str:
        """The shape for reports, e.g. ``[batch, unk__7, 32]`` (``[?]`` for unknown rank)."""
        dims = self.shape(tensor)
        return "[?]" if dims is None else "[" + ", ".join(str(d) for d in dims) + "]"

    def dim_str(self, tensor: gs.Tensor, axis: int) -> str:
        dims = self.shape(tensor)
        return "?" if dims is None or not -len(dims) <= axis < len(dims) else str(dims[axis])

    # ---- the provenance walk

    def root(self, tensor: gs.Tensor, axis: int) -> Root | None:
        """Where ``tensor``'s ``axis`` comes from (memoised); None when the rank is unknown."""
        rank = self.rank(tensor)
        if rank is None or not -rank <= axis < rank:
            return None
        key = (tensor.name, axis % rank)
        if key not in self._roots:
            if key in self._active:  # a cycle cannot happen in a valid graph; stay safe
                return key
            self._active.add(key)
            try:
                self._roots[key] = self._walk(tensor, axis % rank)
            finally:
                self._active.discard(key)
        return self._roots[key]

    def _walk(self, tensor: gs.Tensor, axis: int) -> Root:
        """Follow ``(tensor, axis)`` back while each step provably keeps the dim."""
        while True:
            known = self._raw_dim(tensor, axis)
            if isinstance(known, int):
                return known
            step = walk_step(self, tensor, axis)
            if step is None:
                # A model-declared symbol is its own root; walking on (when possible)
                # lets an output's name (e.g. "frames") meet the input it comes from.
                return known if isinstance(known, str) and known in self.declared else (tensor.name, axis)
            if not isinstance(step, tuple):
                return step
            tensor, axis = step
            rank = self.rank(tensor)
            if rank is None or not -rank <= axis < rank:  # attributes that contradict the shapes: stop
                return (tensor.name, axis)
            axis %= rank

    # ---- internals

    def _raw_shape(self, tensor: gs.Tensor) -> tuple[Dim | None, ...] | None:
        if isinstance(tensor, gs.Constant):
            return tuple(int(d) for d in tensor.shape)
        shape = self.inferred.get(tensor.name)
        if shape is None and tensor.shape is not None:
            # A graph input's dims are its interface. Anywhere else, dims written into the
            # file (value_info, output declarations) are a tool's claims: ONNX Runtime's
            # symbolic shape inference with auto_merge writes batch == frames == C where a
            # misaligned Where made it merge them. Only their rank is taken.
            interface = any(tensor is t for t in self.graph.inputs)
            shape = tuple(d if interface and isinstance(d, (int, str)) else None for d in tensor.shape)
        return shape

    def _raw_dim(self, tensor: gs.Tensor, axis: int) -> Dim | None:
        shape = self._raw_shape(tensor)
        if shape is None or not -len(shape) <= axis < len(shape):
            return None
        return shape[axis]

    def _label(self, tensor: gs.Tensor, axis: int, raw: Dim | None) -> Dim:
        if isinstance(raw, int) or (isinstance(raw, str) and raw in self.declared):
            return raw
        root = self.root(tensor, axis)
        if isinstance(root, (int, str)):
            return root
        if isinstance(raw, str):
            return raw
        if root is not None:
            root_raw = self.inferred.get(root[0]) or ()
            # a walk stopped by shapes that contradict each other ends on an axis its tensor lacks
            if -len(root_raw) <= root[1] < len(root_raw) and isinstance(root_raw[root[1]], str):
                return root_raw[root[1]]
            return f"{root[0]}[{root[1]}]"
        return "?"


def analyze(graph: gs.Graph) -> GraphFacts:
    """Facts about ``graph`` as it is now; call again after editing it."""
    declared: set[str] = set()
    for tensor in [*graph.inputs, *graph.outputs]:
        for d in tensor.shape or ():
            if isinstance(d, str) and d:
                declared.add(d)
    return GraphFacts(graph=graph, inferred=inferred_shapes(graph), declared=frozenset(declared))
