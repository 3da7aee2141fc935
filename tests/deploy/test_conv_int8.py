"""deploy/conv_int8: strided 1-D convolutions as int8 MatMuls over im2col rows, one scale
and zero point per row (``optimize --int8``).

Must rewrite: a conv with enough input channels and a kernel of 3 or more, at opsets with
ReduceMax's axes as an attribute (13) and as an input (18); the result stays within
int8's error of the float conv at every length down to one frame. Must not touch: grouped,
padded, dilated, stride-1, narrow or short-kernel convs, and convs whose silence response
is unknown. End to end on a 256-channel extractor, and the fallback when the rows miss.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from hubert_fix.deploy import conv_int8
from hubert_fix.deploy.names import Names
from hubert_fix.onnxio.reading import load_model
from hubert_fix.onnxio.weights import Weights

C, CO = 256, 64


def _conv_model(path, *, opset: int = 17, kernel: int = 3, stride: int = 2, channels: int = C, bias: bool = True,
                **attrs: object):  # fmt: skip
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(
        (rng.standard_normal((CO, channels // attrs.get("group", 1), kernel)) / 20).astype(np.float32), "w"
    )
    inits = [weight]
    inputs = ["x", "w"]
    if bias:
        inits.append(numpy_helper.from_array(rng.standard_normal(CO).astype(np.float32), "b"))
        inputs.append("b")
    node = helper.make_node("Conv", inputs, ["y"], name="conv", strides=[stride], **attrs)
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", channels, "time"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", CO, "frames"])], inits,
    )  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8), path)
    return load_model(path)


def _gelu_like(rng: np.random.Generator, batch: int, frames: int, z: np.ndarray) -> np.ndarray:
    """What a conv of the extractor reads: the silence response plus GELU-shaped deviations."""
    raw = rng.standard_normal((batch, C, frames)).astype(np.float32)
    return (z[None, :, None] + 0.5 * raw * (raw > -0.3)).astype(np.float32)


@pytest.mark.parametrize("opset", [13, 18])
@pytest.mark.parametrize(("kernel", "stride"), [(3, 2), (4, 2), (4, 3), (3, 3)])
def test_rows_match_the_float_conv(tmp_path, opset: int, kernel: int, stride: int) -> None:
    model = _conv_model(tmp_path / "conv.onnx", opset=opset, kernel=kernel, stride=stride)
    z = np.linspace(-0.17, 1.5, C).astype(np.float32)
    weights = Weights(model)
    assert conv_int8.conv_int8(weights, Names(model.proto.graph), {"x": z}) == ["conv"]
    weights.drop_unused()
    onnx.checker.check_model(model.proto)
    assert "MatMulInteger" in {n.op_type for n in model.proto.graph.node}
    before = ort.InferenceSession(str(tmp_path / "conv.onnx"), providers=["CPUExecutionProvider"])
    after = ort.InferenceSession(model.proto.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    for batch, frames in [(1, kernel), (1, kernel + 1), (2, 101), (3, 400)]:
        x = _gelu_like(rng, batch, frames, z)
        want, got = before.run(None, {"x": x})[0], after.run(None, {"x": x})[0]
        assert got.shape == want.shape == (batch, CO, (frames - kernel) // stride + 1)
        a, b = got.transpose(0, 2, 1).reshape(-1, CO), want.transpose(0, 2, 1).reshape(-1, CO)
        cosines = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
        assert cosines.min() > 0.999, (batch, frames, cosines.min())
        assert np.abs(got - want).max() < 0.02 * np.abs(want).max()


@pytest.mark.parametrize(
    ("change", "silence"),
    [
        ({"group": 2}, True), ({"pads": [1, 1]}, True), ({"dilations": [2]}, True), ({"stride": 1}, True),
        ({"stride": 4}, True),
        ({"channels": 128}, True), ({"kernel": 2}, True), ({"opset": 12}, True), ({}, False),
    ],
)  # fmt: skip
def test_what_is_not_rewritten(tmp_path, change: dict[str, object], silence: bool) -> None:
    model = _conv_model(tmp_path / "conv.onnx", **change)
    channels = int(change.get("channels", C))
    known = {"x": np.zeros(channels, np.float32)} if silence else {}
    assert conv_int8.conv_int8(Weights(model), Names(model.proto.graph), known) == []
    assert [n.op_type for n in model.proto.graph.node] == ["Conv"]


def test_a_silence_response_that_varies_over_time_is_declined() -> None:
    steady = np.tile(np.arange(4, dtype=np.float32)[None, :, None], (1, 1, 9))
    assert np.array_equal(conv_int8._constant_over_time(steady), np.arange(4, dtype=np.float32))
    varying = steady.copy()
    varying[0, 2, 0] += 0.5  # an edge effect: padding, or a conv that sees the signal's start
    assert conv_int8._constant_over_time(varying) is None
    assert conv_int8._constant_over_time(np.full((1, 4, 3), np.nan, np.float32)) is None


@pytest.fixture(scope="module")
def wide(tmp_path_factory: pytest.TempPathFactory):
    """HuBERT with a 256-channel extractor (base's conv structure), 2 layers of 256: exported and repaired."""
    from conftest import export_hubert

    return export_hubert(tmp_path_factory.mktemp("wide"), "wide", 256)


def test_optimize_int8_runs_the_extractor_on_rows(wide, tmp_path) -> None:
    from conftest import ANY_CPU_INT8_TOLERANCE  # the transformer's MatMuls, not the rows, vary with the CPU

    import hubert_fix

    out = tmp_path / "int8.onnx"
    report = hubert_fix.optimize(wide, out, precision="int8", tolerance=ANY_CPU_INT8_TOLERANCE)
    assert report.ok and not report.dropped, [c.failures for c in report.validation.cases]
    assert {s.name: s.count for s in report.steps}["int8-conv-rows"] == 4  # convs 1-4 (k = 3); 0, 5, 6 stay float
    ops = [n.op_type for n in onnx.load(out).graph.node]
    assert ops.count("Conv") == 4  # conv 0, 5, 6 and the positional conv
    assert ops.count("QuantizeLinear") == 8  # convs 1-4: their taps 0-1 and tap 2 apart


def test_rows_that_miss_are_dropped_and_said(wide, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    import hubert_fix

    monkeypatch.setattr(conv_int8, "WEIGHT_LEVELS", 1)  # ternary weights: far outside int8's tolerance
    out = tmp_path / "int8.onnx"
    report = hubert_fix.optimize(wide, out, precision="int8", quick=True)
    assert report.ok and len(report.dropped) == 1 and report.dropped[0].startswith("int8-conv-rows: ")
    assert "int8-conv-rows" not in {s.name for s in report.steps}
    meta = {p.key: p.value for p in onnx.load(out, load_external_data=False).metadata_props}
    assert json.loads(meta["hubert_fix.optimize"])["dropped"] == report.dropped
