"""output-shapes: an output declaration the graph provably contradicts is given the computed shape."""

from __future__ import annotations

import onnx
import onnx_builders as ob
import pytest
from onnx import TensorProto, helper

from hubert_fix.passes import OutputShapes

PASS = OutputShapes()


def declared(shape: list[int | str]) -> onnx.ModelProto:
    """``Where(mask, 0, x)`` with a right condition ([batch, frames, 1]), its output declared ``shape``."""
    m = ob.where_model(["batch", "frames", 1], ["batch", "frames", 4])
    m.graph.output[0].CopyFrom(helper.make_tensor_value_info("y", TensorProto.FLOAT, shape))
    return m


def _dims(m: onnx.ModelProto) -> list[int | str]:
    return [d.dim_param or d.dim_value for d in m.graph.output[0].type.tensor_type.shape.dim]


@pytest.mark.parametrize(
    ("claim", "after"),
    [
        (["batch", "frames", 4, 4], ["batch", "frames", 4]),  # one dim too many (the fuzz finding)
        (["batch", "frames"], ["batch", "frames", 4]),  # one too few
        (["batch", "frames", 8], ["batch", "frames", 4]),  # another static width than the graph's
    ],
)
def test_a_contradicted_declaration_gets_the_computed_shape(claim, after):
    fixed, result = ob.run_pass(PASS, declared(claim))
    assert result.modified and len(result.edits) == 1 and "but the graph computes" in result.edits[0].before
    assert _dims(fixed) == after
    _, again = ob.run_pass(PASS, fixed)
    assert not again.edits  # idempotent


@pytest.mark.parametrize("claim", [["batch", "frames", 4], ["b", "t", 4], [2, 5, 4], ["batch", "frames", "c"]])
def test_a_declaration_the_graph_does_not_prove_wrong_stays(claim):
    """Symbols, and static sizes where inference knows none, are claims nothing contradicts."""
    _, result = ob.run_pass(PASS, declared(claim))
    assert not result.edits and not result.declined
