"""The rewrite passes, in the order ``repair`` runs them.

``DEFAULT_PASSES`` is the registry: the CLI lists it and ``--skip NAME`` filters it.
node-order runs first (the passes after it read the graph in order), then cast-types
(a file whose Cast contradicts its declared types cannot load at all), then pinned-dims:
it gives back the symbolic dims a shape tool pinned through a misaligned Where, so that
the passes after it see the graph's own interface.
where-broadcast runs next so that the graph ORT can load is the one whose slices
are then checked; frozen-pad clamps a frozen padded length before frozen-slice fixes
the slices by it; ctc-mask-scatter then rewrites the CTC head's masked write (after
the encoder's repairs, in the graph's order; it depends on none of them);
output-shapes gives an output the shape the repaired graph computes where its declaration
contradicts it; frozen-batch only reports (a batch the trace fixed cannot be repaired), last.
"""

from __future__ import annotations

from hubert_fix.passes.contract import RewritePass

from .cast_types import CastTypes
from .ctc_mask_scatter import CtcMaskScatter
from .frozen_batch import FrozenBatch
from .frozen_pad import FrozenPad
from .frozen_slice import FrozenSlice
from .node_order import NodeOrder
from .output_shapes import OutputShapes
from .pinned_dims import PinnedDims
from .where_broadcast import WhereBroadcast

DEFAULT_PASSES: tuple[RewritePass, ...] = (
    NodeOrder(),
    CastTypes(),
    PinnedDims(),
    WhereBroadcast(),
    FrozenPad(),
    FrozenSlice(),
    CtcMaskScatter(),
    OutputShapes(),
    FrozenBatch(),
)


__all__ = [
    "DEFAULT_PASSES",
    "CastTypes",
    "CtcMaskScatter",
    "FrozenBatch",
    "FrozenPad",
    "FrozenSlice",
    "NodeOrder",
    "OutputShapes",
    "PinnedDims",
    "WhereBroadcast",
]
