"""frozen-batch: must flag (batch 1 fixed in the graph, dynamic input batch), must NOT flag, nothing edited."""

from __future__ import annotations

import onnx_builders as ob
import pytest
from onnx import TensorProto, helper

from hubert_fix.passes import FrozenBatch

PASS = FrozenBatch()


def _reshape_model(target: list[int], batch: object = "batch") -> object:
    """``y = Reshape(x, target)``: a constant target fixes the output batch when it says 1."""
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["y"], name="/Reshape")]
    return ob.model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, "frames", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, None, None])],
        17,
        [ob.const("shape", target)],
    )


def test_flags_a_batch_the_graph_fixed_at_one():
    fixed, result = ob.run_pass(PASS, _reshape_model([1, -1, 8]))
    assert not result.modified and not result.edits
    [declined] = result.declined
    assert declined.blocking and declined.node == "y"
    assert "batch 1 fixed" in declined.reason and "re-export tracing a batch of 2" in declined.reason


@pytest.mark.parametrize(
    ("target", "batch"),
    [
        ([0, -1, 8], "batch"),  # Reshape keeps the batch (0 = copy)
        ([-1, 4, 8], "batch"),  # batch unknown but not 1
        ([1, -1, 8], 1),  # the input says batch 1 too: consistent
    ],
)
def test_leaves_a_consistent_batch_alone(target, batch):
    _, result = ob.run_pass(PASS, _reshape_model(target, batch))
    assert not result.edits and not result.declined


def test_an_input_that_declares_batch_one_explains_the_output():
    # x [1, T, 8] with a dynamic-looking mask [T, T]: the 1 comes from an input, not the trace.
    m = ob.where_model(["frames", "frames"], [1, "frames", "frames"])
    _, result = ob.run_pass(PASS, m)
    assert not result.edits and not result.declined
