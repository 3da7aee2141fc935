"""ctc-mask-scatter: must fix (opset forms, ORT before/after), must NOT touch, idempotence, end to end."""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnx_builders as ob
import onnxruntime as ort
import pytest
from conftest import FIXTURES
from onnx import TensorProto, helper

import hubert_fix
from hubert_fix.passes import DEFAULT_PASSES, CtcMaskScatter
from hubert_fix.passes.contract import PassResult

PASS = CtcMaskScatter()
V = 4  # vocabulary: the data's trailing dim
FRAMES = 6
CTC_FIXTURE = FIXTURES / "wav2vec2_base_ctc.raw.onnx"


def masked_write_model(
    opset: int = 17,
    *,
    values_shape: ob.Shape | None = (V,),
    mask_shape: ob.Shape = ("frames", "batch"),
    unsqueeze_axes: tuple[int, ...] | None = (2,),
    shape_of: str = "x",
    reduction: str | None = None,
    dynamo: bool = False,
) -> onnx.ModelProto:
    """``x[mask] = values`` as the TorchScript exporter records it (``masked_scatter``).

    ``y = ScatterND(x, Transpose(NonZero(Expand(Unsqueeze(mask), Shape(x)))),
    Slice(Reshape(values, [-1]), [0], [Shape(indices)[0]], [0]))`` with x [frames, batch, V]:
    fairseq's ``logits[padding_mask.T] = masking_tensor``. ``unsqueeze_axes=None`` expands
    the mask as it is; ``shape_of`` names the tensor whose Shape the mask is expanded to;
    ``dynamo`` writes the updates as the dynamo exporter (torchlib) does, right:
    ``Reshape(Expand(values, [rows selected, V]), [-1])`` (opset >= 13); ``values_shape=None``
    computes values by a Reshape to a shape input, of a rank nothing can tell.
    """
    m1 = "mask" if unsqueeze_axes is None else "m1"
    nodes = [] if unsqueeze_axes is None else ob.unsqueeze(opset, "mask", list(unsqueeze_axes), "m1", "/Unsqueeze_1")
    nodes += [
        helper.make_node("Shape", [shape_of], ["shape_x"], name="/Shape_4"),
        helper.make_node("Expand", [m1, "shape_x"], ["expanded"], name="/Expand_2"),
        helper.make_node("NonZero", ["expanded"], ["nz"], name="/NonZero"),
        helper.make_node("Transpose", ["nz"], ["indices"], name="/Transpose_1", perm=[1, 0]),
    ]
    if dynamo:
        nodes += [
            helper.make_node("Cast", ["mask"], ["mask_i"], name="/Cast", to=TensorProto.INT64),
            helper.make_node("ReduceSum", ["mask_i"], ["rows"], name="/ReduceSum", keepdims=0),
            *ob.unsqueeze(opset, "rows", [0], "rows1", "/Unsqueeze_3"),
            helper.make_node("Concat", ["rows1", "width"], ["expanded_shape"], name="/Concat", axis=0),
            helper.make_node("Expand", ["values", "expanded_shape"], ["per_row"], name="/Expand_3"),
            helper.make_node("Reshape", ["per_row", "minus1"], ["updates"], name="/Reshape_1"),
        ]
    else:
        nodes += [
            helper.make_node("Reshape", ["values", "minus1"], ["flat"], name="/Reshape_1"),
            helper.make_node("Shape", ["indices"], ["shape_i"], name="/Shape_5"),
            helper.make_node("Gather", ["shape_i", "i0"], ["count"], name="/Gather_1", axis=0),
            *ob.unsqueeze(opset, "count", [0], "end", "/Unsqueeze_2"),
            helper.make_node("Slice", ["flat", "zero", "end", "zero"], ["updates"], name="/Slice_2"),
        ]
    scatter_attrs = {"reduction": reduction} if reduction else {}
    nodes.append(
        helper.make_node("ScatterND", ["x", "indices", "updates"], ["y"], name="/ScatterND_1", **scatter_attrs)
    )
    inputs = [
        helper.make_tensor_value_info("mask", TensorProto.BOOL, list(mask_shape)),
        helper.make_tensor_value_info("x", TensorProto.FLOAT, ["frames", "batch", V]),
    ]
    if values_shape is None:  # values = Reshape(flat, target): a rank no inference can tell
        nodes.insert(0, helper.make_node("Reshape", ["flat_values", "target"], ["values"], name="/Reshape"))
        inputs.append(helper.make_tensor_value_info("flat_values", TensorProto.FLOAT, ["m"]))
        inputs.append(helper.make_tensor_value_info("target", TensorProto.INT64, ["n"]))
    else:
        inputs.append(helper.make_tensor_value_info("values", TensorProto.FLOAT, list(values_shape)))
    if shape_of != "x":
        inputs.append(helper.make_tensor_value_info(shape_of, TensorProto.FLOAT, ["frames", "batch", V]))
    inits = [ob.const("minus1", [-1]), ob.const("i0", 0), ob.const("zero", [0]), ob.const("width", [V])]
    out = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["frames", "batch", V])]
    return ob.model(nodes, inputs, out, opset, inits)


def padding(batch: int, padded: int) -> np.ndarray:
    """A time-major frame mask [FRAMES, batch] with ``padded`` True frames in all, at the ends of rows."""
    mask = np.zeros((FRAMES, batch), bool)
    for n in range(padded):
        row = batch - 1 - n % batch  # the last row first, then the others
        mask[FRAMES - 1 - n // batch, row] = True
    return mask


def masked_write(x: np.ndarray, mask: np.ndarray, values: np.ndarray) -> np.ndarray:
    """PyTorch's ``x[mask] = values``: values broadcast over the selected rows (or one row each)."""
    y = x.copy()
    y[mask] = values
    return y


def _run(m: onnx.ModelProto | ort.InferenceSession, mask: np.ndarray, x: np.ndarray, values: np.ndarray) -> np.ndarray:
    session = m if isinstance(m, ort.InferenceSession) else ob.session(m)
    return session.run(None, {"mask": mask, "x": x, "values": values})[0]


@functools.cache
def _raw_and_fixed(opset: int) -> tuple[ort.InferenceSession, ort.InferenceSession, onnx.ModelProto, PassResult]:
    """The exporter's graph and its repair at ``opset``, with sessions (built once per opset)."""
    raw = masked_write_model(opset)
    fixed, result = ob.run_pass(PASS, raw)
    return ob.session(raw), ob.session(fixed), fixed, result


# ----------------------------------------------------------------------- must fix


@pytest.mark.parametrize("opset", [11, 12, 17])  # Unsqueeze axes: attribute below 13, input from 13
def test_repairs_the_exporters_masked_write(opset):
    _, _, fixed, result = _raw_and_fixed(opset)
    assert result.modified and len(result.edits) == 1 and not result.declined
    edit = result.edits[0]
    assert edit.node == "/ScatterND_1" and edit.op == "ScatterND"
    assert "values [4]" in edit.before and "mask [frames, batch]" in edit.before
    assert edit.after.startswith("Where(mask [frames, batch, 1], values [4], data [frames, batch, 4])")
    onnx.checker.check_model(fixed, full_check=True)
    ops = [n.op_type for n in fixed.graph.node]
    assert ops.count("Where") == 1 and not {"ScatterND", "NonZero", "Expand", "Slice"} & set(ops)  # cleaned up


@pytest.mark.parametrize("padded", [0, 1, 5])
@pytest.mark.parametrize("batch", [1, 2, 3])
@pytest.mark.parametrize("opset", [11, 12, 17])
def test_values_reach_every_masked_row_after_and_only_one_before(opset, batch, padded):
    raw, fixed, _, _ = _raw_and_fixed(opset)
    rng = np.random.default_rng(batch * 10 + padded)
    x = rng.standard_normal((FRAMES, batch, V)).astype(np.float32)
    values = np.array([0.0, -np.inf, -np.inf, -np.inf], np.float32)  # fairseq's masking_tensor
    mask = padding(batch, padded)
    expected = masked_write(x, mask, values)
    np.testing.assert_array_equal(_run(fixed, mask, x, values), expected)
    if padded <= 1:  # the exported masked_scatter is right for at most one selected row
        np.testing.assert_array_equal(_run(raw, mask, x, values), expected)
    else:
        with pytest.raises(Exception, match="updates tensor should have shape"):
            _run(raw, mask, x, values)


@pytest.mark.parametrize("values_shape", [[1, V], [1]])  # index_put_(x, (m,), v) with v [1, V]; one value for all V
def test_values_with_dims_of_one_are_broadcast_too(values_shape):
    raw = masked_write_model(values_shape=values_shape)
    fixed, result = ob.run_pass(PASS, raw)
    assert result.modified and len(result.edits) == 1 and not result.declined
    x = np.random.default_rng(5).standard_normal((FRAMES, 2, V)).astype(np.float32)
    values, mask = np.full(values_shape, 7.0, np.float32), padding(2, 3)
    np.testing.assert_array_equal(_run(fixed, mask, x, values), masked_write(x, mask, values))
    with pytest.raises(Exception, match="updates tensor should have shape"):
        _run(raw, mask, x, values)


def test_check_mode_plans_same_edits_and_leaves_graph_alone():
    m = masked_write_model()
    untouched, checked = ob.run_pass(PASS, m, apply=False)
    _, applied = ob.run_pass(PASS, m, apply=True)
    assert not checked.modified and checked.edits == applied.edits
    assert [n.op_type for n in untouched.graph.node] == [n.op_type for n in m.graph.node]


def test_idempotent():
    _, _, fixed, first = _raw_and_fixed(17)
    _, second = ob.run_pass(PASS, fixed)
    assert first.modified
    assert not second.modified and second.edits == [] and second.declined == []


# ----------------------------------------------------------------- must NOT touch


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"values_shape": ["n", V]}, "genuine masked_scatter"),  # x[m] = x[m] * 2: a row of values per frame
        (  # x[m3] = v with a mask of x's own rank: a value per element
            {"values_shape": ["n"], "mask_shape": ["frames", "batch", V], "unsqueeze_axes": None},
            "genuine masked_scatter",
        ),
        ({"values_shape": [11]}, "consumed element by element"),  # x.masked_scatter(m[..., None], src [11])
    ],
    ids=["row-per-frame", "mask-of-data-rank", "flat-source"],
)
def test_per_element_masked_scatter_is_declined_not_blocking_and_left_alone(kwargs, says):
    out, result = ob.run_pass(PASS, masked_write_model(**kwargs))
    assert not result.modified and not result.edits
    [declined] = result.declined
    assert not declined.blocking and says in declined.reason and "correct as exported" in declined.reason
    assert "ScatterND" in [n.op_type for n in out.graph.node]
    rng = np.random.default_rng(7)
    x = rng.standard_normal((FRAMES, 2, V)).astype(np.float32)
    rows = kwargs.get("unsqueeze_axes", (2,)) is not None
    mask = padding(2, 2) if rows else rng.random(x.shape) > 0.5
    selected = np.broadcast_to(mask[..., None], x.shape) if rows else mask
    count, declared = int(selected.sum()), kwargs["values_shape"]
    shape = [int(mask.sum()), V] if len(declared) == 2 else [declared[0] if isinstance(declared[0], int) else count]
    values = rng.standard_normal(shape).astype(np.float32)
    expected = x.copy()  # masked_scatter: the selected elements, in order, take the first flattened values
    expected[selected] = values.reshape(-1)[:count]
    np.testing.assert_array_equal(_run(out, mask, x, values), expected)


def test_range_concat_indices_are_not_a_candidate():
    # wav2vec 2.0's padding_mask[arange(B), lengths - 1] = 1: ScatterND with Range/Concat indices
    nodes = [
        helper.make_node("Shape", ["pm"], ["s"], name="/Shape"),
        helper.make_node("Gather", ["s", "i0"], ["b"], name="/Gather", axis=0),
        helper.make_node("Range", ["i0", "b", "i1"], ["rows"], name="/Range"),
        *ob.unsqueeze(17, "rows", [1], "rows1", "/Unsqueeze"),
        *ob.unsqueeze(17, "last", [1], "last1", "/Unsqueeze_1"),
        helper.make_node("Concat", ["rows1", "last1"], ["idx"], name="/Concat", axis=1),
        *ob.unsqueeze(17, "b", [0], "b1", "/Unsqueeze_2"),
        helper.make_node("Expand", ["one", "b1"], ["ones"], name="/Expand"),
        helper.make_node("ScatterND", ["pm", "idx", "ones"], ["out"], name="/ScatterND"),
    ]
    m = ob.model(
        nodes,
        [
            helper.make_tensor_value_info("pm", TensorProto.FLOAT, ["batch", "frames"]),
            helper.make_tensor_value_info("last", TensorProto.INT64, ["batch"]),
        ],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", "frames"])],
        17,
        [ob.const("i0", 0), ob.const("i1", 1), ob.const("one", 1.0, np.float32)],
    )
    _, result = ob.run_pass(PASS, m)
    assert not result.modified and not result.edits and not result.declined


def test_the_dynamo_exporters_index_put_is_not_a_candidate():
    # torchlib expands values to [rows, V] before flattening: the same indices, right as exported
    m = masked_write_model(dynamo=True)
    out, result = ob.run_pass(PASS, m)
    assert not result.modified and not result.edits and not result.declined
    x = np.random.default_rng(3).standard_normal((FRAMES, 2, V)).astype(np.float32)
    values, mask = np.arange(V, dtype=np.float32), padding(2, 5)
    np.testing.assert_array_equal(_run(out, mask, x, values), masked_write(x, mask, values))


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"shape_of": "other"}, "other than Shape(data)"),
        ({"mask_shape": ["frames"], "unsqueeze_axes": (1,)}, "from the right, not as a bool index"),
        ({"values_shape": ["v"]}, "not proven to broadcast"),
        ({"reduction": "add"}, "reduction 'add'"),
        ({"values_shape": None}, "ranks unknown"),
    ],
)
def test_unproven_masked_write_is_declined_blocking(kwargs, says):
    _, result = ob.run_pass(PASS, masked_write_model(**kwargs))
    assert not result.modified and not result.edits
    [declined] = result.declined
    assert declined.blocking and says in declined.reason and "values may be short" in declined.reason


def test_registered_after_frozen_slice_before_output_shapes():
    """After the encoder's repairs; before output-shapes, which declares the outputs as the repaired graph computes them."""
    names = [p.name for p in DEFAULT_PASSES]
    assert names.index("frozen-slice") + 1 == names.index(PASS.name) == names.index("output-shapes") - 1


# ----------------------------------------------------------------- end to end


def check_and_repair_ctc_export(path: Path) -> None:
    """check reports the edit, repair makes it, and the result runs a batch of 2 with 22 padded frames."""
    report = hubert_fix.check(path)
    assert report.blocking == 0
    [edit] = [e for r in report.results if r.name == PASS.name for e in r.edits]
    assert edit.op == "ScatterND" and "Where(mask" in edit.after
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "repaired.onnx"
        repaired = hubert_fix.repair(path, out)
        assert [e.to_dict() for e in repaired.edits] == [e.to_dict() for e in report.edits]
        session = ob.session(onnx.load(out))
    source = np.random.default_rng(0).standard_normal((2, 16000)).astype(np.float32) * 0.1
    padding_mask = np.zeros((2, 16000), bool)
    padding_mask[1, 9000:] = True
    feed = {i.name: padding_mask if i.type == "tensor(bool)" else source for i in session.get_inputs()}
    outputs = dict(zip([o.name for o in session.get_outputs()], session.run(None, feed), strict=True))
    frames = next(v for v in outputs.values() if v.dtype == np.bool_)  # the frame mask [B, T]
    logits = next(v for v in outputs.values() if v.ndim == 3)  # [B, T, V]
    assert int(frames.sum()) == 22 and frames[1].sum() == 22
    forced = logits[frames]  # fairseq's get_logits: blank (index 0) 0, every other symbol -inf
    assert forced.shape == (22, logits.shape[2])
    assert np.all(forced[:, 0] == 0) and np.all(np.isneginf(forced[:, 1:]))
    assert np.isfinite(logits[~frames]).all()


@pytest.mark.skipif(not CTC_FIXTURE.exists(), reason=f"{CTC_FIXTURE.name} not among the fixtures yet")
def test_end_to_end_on_a_wav2vec2_ctc_export():
    check_and_repair_ctc_export(CTC_FIXTURE)
