"""where-broadcast: must fix, must NOT touch, idempotence, opset forms."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_builders as ob
import onnx_graphsurgeon as gs
import pytest
from onnx import TensorProto, helper

from hubert_fix.analysis.dims import analyze
from hubert_fix.passes import WhereBroadcast

PASS = WhereBroadcast()


def _run_model(m: onnx.ModelProto, mask: np.ndarray, x: np.ndarray) -> np.ndarray:
    return ob.session(m).run(None, {"mask": mask, "x": x})[0]


@pytest.mark.parametrize("opset", [11, 13, 17])
@pytest.mark.parametrize(
    ("cond_shape", "data_shape", "b", "t", "c"),
    [
        (["batch", "frames"], ["batch", "frames", 32], 2, 5, 32),
        (["batch", "frames"], ["batch", "frames", 4], 2, 4, 4),  # T == C: silently wrong before
        (["batch", 1], ["batch", 1, 8], 3, 1, 8),  # T == 1
        ([2, 4], [2, 4, 4], 2, 4, 4),  # static, T == C, B != T: only left-aligned fits
    ],
)
def test_fixes_left_aligned_mask(opset, cond_shape, data_shape, b, t, c):
    m = ob.where_model(cond_shape, data_shape, opset)
    fixed, result = ob.run_pass(PASS, m)
    assert result.modified and len(result.edits) == 1 and not result.declined
    edit = result.edits[0]
    assert edit.node == "/encoder/Where" and "right-aligned" in edit.before
    onnx.checker.check_model(fixed, full_check=True)
    unsq = [n for n in fixed.graph.node if n.op_type == "Unsqueeze"]
    assert len(unsq) == 1
    assert (len(unsq[0].input) == 1) == (opset < 13)  # attribute form below 13, input form from 13
    rng = np.random.default_rng(0)
    x = rng.standard_normal((b, t, c)).astype(np.float32)
    mask = rng.random((b, t)) > 0.5
    np.testing.assert_array_equal(_run_model(fixed, mask, x), ob.masked_zero(x, mask))


def test_t_equals_c_is_silently_wrong_before_the_fix():
    m = ob.where_model(["batch", "frames"], ["batch", "frames", 4])
    x = np.arange(16, dtype=np.float32).reshape(1, 4, 4)
    mask = np.array([[True, False, False, False]])
    assert not np.array_equal(_run_model(m, mask, x), ob.masked_zero(x, mask))


def test_fixes_traced_mask_via_provenance():
    m = ob.traced_mask_model()
    fixed, result = ob.run_pass(PASS, m)
    assert result.modified and result.edits[0].before.startswith("condition [batch, frames] vs data [batch, frames, 8]")
    onnx.checker.check_model(fixed, full_check=True)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 8)).astype(np.float32)
    mask_in = rng.random((2, 14)) > 0.6
    end = np.array([-2], np.int64)  # keep 12 samples = 3 frames x 4
    sliced = mask_in[:, :-2].reshape(2, 3, -1)
    cond = ~(np.logical_not(sliced).max(axis=-1))
    y = ob.session(fixed).run(None, {"mask_in": mask_in, "end": end, "x": x})[0]
    np.testing.assert_array_equal(y, ob.masked_zero(x, cond))


def test_check_mode_plans_same_edits_and_leaves_graph_alone():
    m = ob.where_model(["batch", "frames"], ["batch", "frames", 32])
    untouched, checked = ob.run_pass(PASS, m, apply=False)
    _, applied = ob.run_pass(PASS, m, apply=True)
    assert not checked.modified
    assert checked.edits == applied.edits
    assert [n.op_type for n in untouched.graph.node] == ["Where"]


def test_idempotent():
    fixed, first = ob.run_pass(PASS, ob.where_model(["batch", "frames"], ["batch", "frames", 32]))
    again, second = ob.run_pass(PASS, fixed)
    assert first.modified
    assert not second.modified and second.edits == [] and second.declined == []


def test_right_aligned_is_left_alone():
    m = ob.where_model(["frames", 32], ["batch", "frames", 32])
    out, result = ob.run_pass(PASS, m)
    assert not result.modified and not result.edits
    [declined] = result.declined
    assert not declined.blocking and "already broadcasts correctly" in declined.reason


def test_same_rank_is_not_a_candidate():
    _, result = ob.run_pass(PASS, ob.where_model(["batch", "frames", 1], ["batch", "frames", 32]))
    assert not result.modified and not result.edits and not result.declined


def test_static_ambiguous_is_declined_blocking():
    # B == 1 and T == C: left- and right-aligned both fit, and give different results.
    _, result = ob.run_pass(PASS, ob.where_model([1, 4], [1, 4, 4]))
    assert not result.modified and not result.edits
    [declined] = result.declined
    assert declined.blocking and "ambiguous" in declined.reason and "4\u21944" in declined.reason


def test_unprovable_is_declined_blocking():
    _, result = ob.run_pass(PASS, ob.where_model(["b2", "t2"], ["batch", "frames", 8]))
    assert not result.modified and not result.edits
    [declined] = result.declined
    assert declined.blocking and "axis 0: b2 vs batch" in declined.reason


def test_where_of_unknown_rank_is_reported_not_guessed():
    # The condition comes from an op shape inference does not know, so its rank is unknown.
    nodes = [
        helper.make_node("Mystery", ["mask"], ["m2"], name="/mystery", domain="example.custom"),
        helper.make_node("Where", ["m2", "zero", "x"], ["y"], name="/encoder/Where"),
    ]
    graph = helper.make_graph(
        nodes,
        "t",
        [
            helper.make_tensor_value_info("mask", TensorProto.BOOL, ["batch", "frames"]),
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "frames", 4]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [ob.const("zero", 0.0, np.float32)],
    )
    m = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("example.custom", 1)], ir_version=8
    )
    graph = gs.import_onnx(m)
    result = PASS.run(graph, analyze(graph), apply=True)
    assert not result.modified and not result.edits
    [declined] = result.declined
    assert declined.blocking and "condition ?" in declined.reason


def test_unnamed_input_dims_are_repaired_with_the_assumption_stated():
    # An export without dim names: nothing proves that mask and x share the batch, but the
    # right-aligned reading would need the dynamic frame count to equal C = 8 always.
    m = ob.where_model([None, "frames"], [None, "frames", 8])
    fixed, result = ob.run_pass(PASS, m)
    assert result.modified and len(result.edits) == 1 and not result.declined
    assumption = result.edits[0].assumption
    assert "unnamed dims of different graph inputs" in assumption and "frames to equal 8" in assumption
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 5, 8)).astype(np.float32)
    mask = rng.random((2, 5)) > 0.5
    np.testing.assert_array_equal(_run_model(fixed, mask, x), ob.masked_zero(x, mask))


@pytest.mark.parametrize(
    ("cond_shape", "data_shape"),
    [
        ([None, "frames"], [None, "frames", "width"]),  # right-aligned not refuted: C is dynamic too
        (["b2", "frames"], ["batch", "frames", 8]),  # named, different: a real mismatch, not a missing name
    ],
)
def test_unproven_batch_without_refuted_right_alignment_stays_declined(cond_shape, data_shape):
    _, result = ob.run_pass(PASS, ob.where_model(cond_shape, data_shape))
    assert not result.modified and not result.edits
    [declined] = result.declined
    assert declined.blocking and "neither alignment proven" in declined.reason
