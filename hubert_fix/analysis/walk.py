"""The provenance walk's vocabulary: where a walk ends, what one step returns, and what
a step asks of the facts it walks (``dims.GraphFacts`` is the one implementation)."""

from __future__ import annotations

from typing import Protocol

import onnx_graphsurgeon as gs

from hubert_fix.analysis.shapes import Dim

#: Where a provenance walk ends: a static size, a model-declared symbol, or the
#: ``(tensor name, axis)`` at which the walk had to stop.
Root = int | str | tuple[str, int]


class Facts(Protocol):
    """What a step asks of the facts it walks (``dims.GraphFacts``, which calls the steps)."""

    def rank(self, tensor: gs.Tensor) -> int | None: ...

    def shape(self, tensor: gs.Tensor) -> tuple[Dim, ...] | None: ...

    def root(self, tensor: gs.Tensor, axis: int) -> Root | None: ...

    def is_one(self, tensor: gs.Tensor, axis: int) -> bool: ...


#: One step back: the (tensor, axis) a dim is carried from, a static size, a symbol, or None.
Step = tuple[gs.Tensor, int] | int | str | None
