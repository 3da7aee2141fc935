"""ONNX Runtime's contrib ops, as the standard op that has the same shape rule.

A model saved by ONNX Runtime's offline optimisation (``SessionOptions.optimized_model_filepath``
at the extended level) or by ``onnxruntime.transformers.optimizer.optimize_model`` carries
``com.microsoft`` ops (Gelu, BiasGelu, SkipLayerNormalization, FusedMatMul, ...). ONNX shape
inference does not know them, so everything after them would have no shape, and no Where
behind them could be examined. Each op here is named with the standard op whose shape rule
ONNX Runtime's own definition uses (``onnxruntime/core/graph/contrib_ops``: most propagate
the first input's shape; FusedMatMul and the quantized MatMuls use MatMul's; FusedConv
Conv's; FusedGemm Gemm's), and which of its inputs and attributes that rule reads. Shape
inference runs on the standard op in its place, and the provenance walk steps through it
as through the standard op. An op not listed stays unknown: the walk stops there.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx_graphsurgeon as gs

MICROSOFT = "com.microsoft"


@dataclass(frozen=True)
class Standard:
    """The standard op with the same shape rule: its type, the contrib op's inputs it reads
    (by index), the attributes it keeps, and the contrib op's outputs it stands for."""

    op: str
    inputs: tuple[int, ...]
    attrs: tuple[str, ...] = ()
    outputs: tuple[int, ...] = (0,)


_FIRST_INPUT = Standard("Identity", (0,))
_SKIP_NORM = Standard("Identity", (0,), outputs=(0, 3))  # output 3: input + skip (+ bias), same shape
_MATMUL = Standard("MatMul", (0, 1))

#: (domain, op) -> its shape rule, from ONNX Runtime's contrib op definitions.
CONTRIB: dict[tuple[str, str], Standard] = {
    (MICROSOFT, "Gelu"): _FIRST_INPUT,
    (MICROSOFT, "FastGelu"): _FIRST_INPUT,
    (MICROSOFT, "BiasGelu"): _FIRST_INPUT,
    (MICROSOFT, "QuickGelu"): _FIRST_INPUT,
    (MICROSOFT, "BiasAdd"): _FIRST_INPUT,
    (MICROSOFT, "BiasSoftmax"): _FIRST_INPUT,
    (MICROSOFT, "BiasDropout"): _FIRST_INPUT,
    (MICROSOFT, "LayerNormalization"): _FIRST_INPUT,
    (MICROSOFT, "SkipLayerNormalization"): _SKIP_NORM,
    (MICROSOFT, "SkipSimplifiedLayerNormalization"): _SKIP_NORM,
    ("", "SimplifiedLayerNormalization"): _FIRST_INPUT,  # ONNX Runtime defines it in the ONNX domain
    (MICROSOFT, "FusedMatMul"): _MATMUL,  # only without transposes (see ``standard``)
    (MICROSOFT, "DynamicQuantizeMatMul"): _MATMUL,
    (MICROSOFT, "MatMulIntegerToFloat"): _MATMUL,
    (MICROSOFT, "FusedConv"): Standard(
        "Conv", (0, 1, 2), ("auto_pad", "dilations", "group", "kernel_shape", "pads", "strides")
    ),
    (MICROSOFT, "FusedGemm"): Standard("Gemm", (0, 1, 2), ("alpha", "beta", "transA", "transB")),
}

_TRANSPOSES = ("transA", "transB", "transBatchA", "transBatchB")


def standard(node: gs.Node) -> Standard | None:
    """The standard op with ``node``'s shape rule, or None (a standard op, or a contrib op not known)."""
    rule = CONTRIB.get((node.domain or "", node.op))
    if rule is None:
        return None
    if node.op == "FusedMatMul" and any(node.attrs.get(t, 0) for t in _TRANSPOSES):
        return None  # MatMul's rule with operands transposed: not modelled, the walk stops
    return rule
