"""frozen-slice: must fix (Neg / Mul(-1) / Sub(0, .) forms, opsets), must NOT touch, idempotence."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_builders as ob
import pytest

from hubert_fix.passes import DEFAULT_PASSES, FrozenSlice

PASS = FrozenSlice()


def _inputs(samples: int, frames: int) -> dict[str, np.ndarray]:
    pm = np.arange(2 * samples, dtype=np.float32).reshape(2, samples)
    return {"pm": pm, "features": np.zeros((2, frames, 4), np.float32)}


def _expected(samples: int, frames: int) -> np.ndarray:
    pm = _inputs(samples, frames)["pm"]
    extra = samples % frames
    return pm[:, :-extra] if extra > 0 else pm


@pytest.mark.parametrize("opset", [11, 13, 17])
@pytest.mark.parametrize("form", ["neg", "mul", "mul_left", "sub"])
def test_fixes_negated_end(form, opset):
    m = ob.frozen_slice_model(form, opset)
    # Before: samples % frames == 0 gives ends = -0 = 0, an empty slice.
    assert ob.session(m).run(None, _inputs(12, 4))[0].shape == (2, 0)
    fixed, result = ob.run_pass(PASS, m)
    assert result.modified and len(result.edits) == 1 and not result.declined
    assert result.edits[0].node == "/Slice" and "samples - n" in result.edits[0].after
    onnx.checker.check_model(fixed, full_check=True)
    sess = ob.session(fixed)
    for samples, frames in [(12, 4), (14, 4), (16000, 49), (5, 5), (3, 1)]:
        np.testing.assert_array_equal(sess.run(None, _inputs(samples, frames))[0], _expected(samples, frames))


def test_check_mode_plans_same_edits_and_leaves_graph_alone():
    m = ob.frozen_slice_model()
    untouched, checked = ob.run_pass(PASS, m, apply=False)
    _, applied = ob.run_pass(PASS, m, apply=True)
    assert not checked.modified and checked.edits == applied.edits
    assert untouched.SerializeToString() == ob.run_pass(PASS, m, apply=False)[0].SerializeToString()
    assert "Add" not in [n.op_type for n in untouched.graph.node]


def test_idempotent():
    fixed, first = ob.run_pass(PASS, ob.frozen_slice_model())
    _, second = ob.run_pass(PASS, fixed)
    assert first.modified
    assert not second.modified and second.edits == [] and second.declined == []


def test_negated_value_that_is_not_a_remainder_is_left_alone():
    m = ob.frozen_slice_model(n_from_input=True)
    out, result = ob.run_pass(PASS, m)
    assert not result.modified and not result.edits
    [declined] = result.declined
    assert not declined.blocking and "neither a remainder" in declined.reason


def test_remainder_of_the_sliced_dim_is_fixed_whatever_its_sign():
    # Mod(samples, k) with k < 0 is <= 0: the guarded original keeps everything, and so
    # does dim - n (clamped); with k > 0 it is the usual trim.
    fixed, result = ob.run_pass(PASS, ob.frozen_slice_model(divisor_from_input=True))
    assert result.modified and len(result.edits) == 1
    sess = ob.session(fixed)
    for samples, k in [(12, 4), (14, 4), (14, -4), (12, -5), (7, 7)]:
        feeds = {**_inputs(samples, 3), "k": np.array(k, dtype=np.int64)}
        pm, extra = feeds["pm"], samples % k
        np.testing.assert_array_equal(sess.run(None, feeds)[0], pm[:, :-extra] if extra > 0 else pm)


def test_remainder_of_another_dim_with_unknown_sign_is_declined_blocking():
    m = ob.frozen_slice_model(divisor_from_input=True, dividend="frames")
    out, result = ob.run_pass(PASS, m)
    assert not result.modified and not result.edits
    [declined] = result.declined
    assert declined.blocking and "nor n proven >= 0" in declined.reason


@pytest.mark.parametrize("opset", [13, 18])
@pytest.mark.parametrize("form", ["neg", "mul"])
def test_trim_of_a_pad_by_the_same_amount_is_fixed(form, opset):
    m = ob.pad_trim_model(form, opset)
    x = np.arange(2 * 6 * 4, dtype=np.float32).reshape(2, 6, 4)
    assert ob.session(m).run(None, {"x": x})[0].shape == (2, 0, 4)  # even T: pad 0, ends -0
    fixed, result = ob.run_pass(PASS, m)
    assert result.modified and len(result.edits) == 1
    sess = ob.session(fixed)
    for t in (1, 5, 6, 49):
        x = np.random.default_rng(t).standard_normal((2, t, 4)).astype(np.float32)
        np.testing.assert_array_equal(sess.run(None, {"x": x})[0], np.maximum(x, 0))
    _, again = ob.run_pass(PASS, fixed)
    assert not again.modified and not again.edits


@pytest.mark.parametrize("form", ["neg", "mul"])
def test_start_at_the_padded_tail_is_fixed(form):
    # fairseq without a padding mask: ``if pad > 0: mask[:, -pad:] = True``; traced, pad 0
    # makes the start -0 and selects every frame.
    m = ob.pad_trim_model(form, start=True)
    x = np.arange(2 * 6 * 4, dtype=np.float32).reshape(2, 6, 4)
    assert ob.session(m).run(None, {"x": x})[0].shape == (2, 6, 4)  # even T: pad 0, starts -0
    fixed, result = ob.run_pass(PASS, m)
    assert result.modified and len(result.edits) == 1
    assert "starts" in result.edits[0].before and "nothing when n == 0" in result.edits[0].after
    sess = ob.session(fixed)
    for t in (1, 5, 6, 49):
        x = np.random.default_rng(t).standard_normal((2, t, 4)).astype(np.float32)
        pad = t % 2
        padded = np.pad(np.maximum(x, 0), ((0, 0), (0, pad), (0, 0)))
        expected = padded[:, -pad:] if pad > 0 else padded[:, :0]
        np.testing.assert_array_equal(sess.run(None, {"x": x})[0], expected)
    _, again = ob.run_pass(PASS, fixed)
    assert not again.modified and not again.edits


def test_trim_by_a_begin_pad_is_left_alone():
    _, result = ob.run_pass(PASS, ob.pad_trim_model(begin=True))
    assert not result.modified and not result.edits
    [declined] = result.declined
    assert not declined.blocking and "nor the end padding of a Pad" in declined.reason


def test_padded_length_frozen_by_the_trace_is_refused():
    # pad = 8 - T: inputs longer than 8 are cropped by the Pad; no guard explains that.
    _, result = ob.run_pass(PASS, ob.pad_trim_model(frozen=8))
    assert not result.modified and not result.edits
    [declined] = result.declined
    assert declined.blocking and "froze at 8" in declined.reason and "issue #5596" in declined.reason


def test_padded_length_of_a_static_input_is_not_frozen():
    # The sample axis is static: 8 - 7 is the right pad for the only length there is.
    fixed, result = ob.run_pass(PASS, ob.pad_trim_model(frozen=8, length=7))
    assert not any(d.blocking for d in result.declined)
    x = np.random.default_rng(7).standard_normal((2, 7, 4)).astype(np.float32)
    np.testing.assert_array_equal(ob.session(fixed).run(None, {"x": x})[0], np.maximum(x, 0))


def test_constant_end_is_not_a_candidate():
    m = ob.where_model(["batch", "frames"], ["batch", "frames", 4])  # no Slice at all
    _, result = ob.run_pass(PASS, m)
    assert not result.edits and not result.declined


def test_default_order():
    assert [p.name for p in DEFAULT_PASSES] == [
        "node-order",
        "cast-types",
        "pinned-dims",
        "where-broadcast",
        "frozen-pad",
        "frozen-slice",
        "ctc-mask-scatter",
        "output-shapes",
        "frozen-batch",
    ]
