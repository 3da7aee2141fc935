"""pinned-dims: the dims a shape tool merged through a misaligned Where are given back, and only those."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_builders as ob
import onnx_graphsurgeon as gs
import pytest
from onnx import TensorProto, helper

from hubert_fix import runner
from hubert_fix.passes import PinnedDims

PASS = PinnedDims()


def merged_model(width: int = 4) -> onnx.ModelProto:
    """What ``SymbolicShapeInference(auto_merge=True)`` writes over ``Where(mask [B, T], 0, x [B, T, C])``:
    B and T merged with C in the inputs, the output and the value_info."""
    m = ob.where_model([width, "frames"], [width, "frames", width])
    m.graph.output[0].CopyFrom(helper.make_tensor_value_info("y", TensorProto.FLOAT, [width, width, width]))
    m.graph.value_info.append(helper.make_tensor_value_info("y_tmp", TensorProto.FLOAT, [width, width, width]))
    return m


def _dims(info: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_param or d.dim_value for d in info.type.tensor_type.shape.dim]


def test_gives_back_the_batch_and_frames_a_merge_pinned():
    fixed, result = ob.run_pass(PASS, merged_model())
    assert result.modified and len(result.edits) == 1 and not result.declined
    edit = result.edits[0]
    assert edit.op == "graph inputs" and "declared 4" in edit.before and "/encoder/Where" in edit.before
    assert [_dims(i) for i in fixed.graph.input] == [["batch", "frames"], ["batch", "frames", 4]]
    batch, frames, width = _dims(fixed.graph.output[0])  # through the misaligned Where: frames not yet proven
    assert (batch, width) == ("batch", 4) and isinstance(frames, str) and frames  # the width is proven: it stays


def test_the_restored_model_is_repaired_and_right_at_any_batch():
    model, report = runner.repair(merged_model(), "merged.onnx")
    assert [r.name for r in report.results if r.edits] == ["pinned-dims", "where-broadcast"]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 5, 4)).astype(np.float32)  # batch 2, 5 frames: neither is 4
    mask = rng.random((2, 5)) > 0.5
    np.testing.assert_array_equal(ob.session(model).run(None, {"mask": mask, "x": x})[0], ob.masked_zero(x, mask))
    assert all(not i.type.tensor_type.HasField("shape") for i in model.graph.value_info)  # no stale claims


def test_idempotent():
    model, _ = runner.repair(merged_model(), "merged.onnx")
    _, again = ob.run_pass(PASS, model)
    assert not again.edits and not again.modified


def test_a_batch_the_graph_fixes_in_a_constant_is_the_interface():
    """x comes from a Reshape to the constant [4, -1, 4]: the graph itself needs batch 4, so the declared
    4 is the model's interface, not a merge (the Where then decides for itself)."""
    nodes = [helper.make_node("Reshape", ["flat", "shape"], ["x"], name="/Reshape"),
             helper.make_node("Where", ["mask", "zero", "x"], ["y"], name="/encoder/Where")]  # fmt: skip
    m = ob.model(
        nodes,
        [helper.make_tensor_value_info("mask", TensorProto.BOOL, [4, "frames"]),
         helper.make_tensor_value_info("flat", TensorProto.FLOAT, [4, "n"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, "frames", 4])],
        17,
        [ob.const("zero", 0.0, np.float32), ob.const("shape", [4, -1, 4])],
    )  # fmt: skip
    _, result = ob.run_pass(PASS, m)
    assert not result.edits and not result.modified


@pytest.mark.parametrize(
    ("cond", "data"),
    [
        ([1, "frames"], [1, "frames", 4]),  # batch 1: not the width
        (["batch", "frames"], ["batch", "frames", 4]),  # nothing static in the inputs
        ([4, "frames", 4], [4, "frames", 4]),  # no misaligned Where
    ],
)
def test_declared_sizes_that_no_merge_explains_stay(cond, data):
    _, result = ob.run_pass(PASS, ob.where_model(cond, data))
    assert not result.edits and not result.declined


def test_only_the_dims_declared_that_size_are_restored():
    m = merged_model()
    m.graph.input[1].CopyFrom(helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, "frames", 4]))
    graph = gs.import_onnx(m)
    fixed, result = ob.run_pass(PASS, m)
    assert result.edits and _dims(fixed.graph.input[1])[2] == 4 and graph.inputs[1].shape[2] == 4
