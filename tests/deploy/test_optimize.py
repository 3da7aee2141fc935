"""``hubert-fix optimize``: each precision validates, keeps the interface, is idempotent, refuses misses.

fp32 and fp16 validate on the tiny fixtures (C = 32). int8's numerics depend on the CPU
(with AVX-512 VNNI the tiny fixture passes its tolerance, without it misses), so no test
here depends on whether int8 meets its default tolerance: the refusal is shown with a
tolerance int8 misses on every CPU, and int8 that is written with one it meets on every
CPU (on a small real-width HuBERT, C = 256, built from a fairseq config: needs the
[export] extra). The default tolerance's figures are measured by bench/, per CPU.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import ANY_CPU_INT8_TOLERANCE, FIXTURES, RAW, export_hubert, run_cli, run_main

import hubert_fix

REPAIRED_FIXTURES = ["hubert_base_tiny.raw.onnx", "hf_wavlm.onnx", "contentvec_tiny.rvc_v2.onnx"]


@pytest.fixture(scope="module")
def repaired(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("repaired")
    out = {}
    for name in REPAIRED_FIXTURES:
        out[name] = folder / name
        hubert_fix.repair(FIXTURES / name, out[name])
    return out


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """HuBERT with 256 channels, 2 layers, 128-channel extractor: exported and repaired by hubert-fix."""
    return export_hubert(tmp_path_factory.mktemp("small"), "small", 128)


def _ports(path: Path) -> list[str]:
    """Every graph input and output: name, element type and dims, as text."""
    graph = onnx.load(path, load_external_data=False).graph
    return [str(info.type) + info.name for info in (*graph.input, *graph.output) if not info.name.startswith("model.")]


def _graph_bytes(path: Path) -> bytes:
    model = onnx.load(path)
    return model.graph.SerializeToString()


def _record(path: Path) -> dict[str, object]:
    meta = {p.key: p.value for p in onnx.load(path, load_external_data=False).metadata_props}
    return json.loads(meta["hubert_fix.optimize"])


@pytest.mark.parametrize("name", REPAIRED_FIXTURES)
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_validates_keeps_interface_and_is_idempotent(
    repaired: dict[str, Path], tmp_path: Path, name: str, precision: str
) -> None:
    source = repaired[name]
    out, again = tmp_path / "opt.onnx", tmp_path / "again.onnx"
    report = hubert_fix.optimize(source, out, precision=precision)
    assert report.ok and [p.name for p in tmp_path.iterdir()] == ["opt.onnx"]  # the staged candidate is gone
    compared = [c for c in report.validation.cases if c.kind == "case"]
    assert compared and all(c.compared and c.ok for c in compared)
    assert report.validation.reference == "model"
    assert _ports(out) == _ports(source)  # names, element types (float32 in and out for fp16 too), dims
    record = _record(out)
    assert record["precision"] == precision and record["validated"]["cases"] == len(compared)
    if precision == "fp16":  # the weights are float16 now: the file is smaller
        assert report.output_bytes < 0.9 * report.input_bytes
    assert hubert_fix.check(out).edits == []
    assert hubert_fix.validate(out).ok  # the optimized file is still a model the tool understands
    second = hubert_fix.optimize(out, again, precision=precision)
    assert second.ok
    assert _graph_bytes(again) == _graph_bytes(out)  # nothing left to do: the graph is unchanged
    history = _record(again)["history"]  # the first run's record is kept, not overwritten
    assert len(history) == 1 and history[0]["steps"] == record["steps"]


def test_fp16_runs_float16_with_float32_norms(repaired: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "half.onnx"
    assert hubert_fix.optimize(repaired[RAW.name], out, precision="fp16").ok
    model = onnx.load(out)
    types = {t.name: t.data_type for t in model.graph.initializer}
    types.update({n.output[0]: n.attribute[0].t.data_type for n in model.graph.node if n.op_type == "Constant"})
    for node in model.graph.node:  # tied weights: Identity of another initializer
        if node.op_type == "Identity" and node.input[0] in types:
            types[node.output[0]] = types[node.input[0]]
    conv_weights = [n.input[1] for n in model.graph.node if n.op_type == "Conv"]
    assert conv_weights and all(types[w] == onnx.TensorProto.FLOAT16 for w in conv_weights)
    norms = [n for n in model.graph.node if n.op_type in ("LayerNormalization", "InstanceNormalization")]
    assert norms and all(types[n.input[1]] == onnx.TensorProto.FLOAT for n in norms)
    # the length arithmetic stays float32: a sample count past 65504 is not infinite
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    source = np.zeros((1, 70000), dtype=np.float32)
    features = session.run(None, {"source": source, "padding_mask": np.zeros_like(source, dtype=bool)})[0]
    assert features.dtype == np.float32 and features.shape[1] == 218 and np.isfinite(features).all()


#: Bounds int8 meets on every CPU (measured here, AMD EPYC Zen 5 with VNNI: mean frame
#: cosine >= 0.99992 on the real-width model); the default tolerance's margin is ISA-dependent.
ANY_CPU_INT8 = [
    "--tolerance",
    "min_mean_frame_cosine=0.98",
    "--tolerance",
    "min_frame_cosine=0.9",
    "--tolerance",
    "min_cosine=0.98",
]


def test_int8_on_a_real_width_model(small: Path, tmp_path: Path) -> None:
    out, again = tmp_path / "int8.onnx", tmp_path / "again.onnx"
    code, stdout, err = run_main("optimize", small, "-o", out, "--int8", "--json", *ANY_CPU_INT8)
    assert code == 0, (stdout, err)
    report = json.loads(stdout)
    assert report["ok"] and report["output_bytes"] < 0.5 * report["input_bytes"]
    cases = [c for c in report["validation"]["cases"] if c["kind"] == "case"]
    print("int8 mean frame cosines:", sorted(c["mean_frame_cosine"] for c in cases))
    assert cases and all(c["mean_frame_cosine"] >= ANY_CPU_INT8_TOLERANCE.min_mean_frame_cosine for c in cases)
    model = onnx.load(out)
    assert sum(n.op_type == "MatMulInteger" for n in model.graph.node) >= 12  # q, k, v, out, 2 FFN per layer
    weighted = {t.name for t in model.graph.initializer}
    float_matmuls = [n.name for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in weighted]
    assert float_matmuls == ["/post_extract_proj/MatMul"]  # the feature projection stays float (quantize.py)
    assert {step["name"]: step["count"] for step in report["steps"]}["float-feature-projection"] == 1
    assert _ports(out) == _ports(small)
    assert hubert_fix.optimize(out, again, precision="int8", tolerance=ANY_CPU_INT8_TOLERANCE).ok
    assert _graph_bytes(again) == _graph_bytes(out)


@pytest.mark.parametrize(
    ("fixture", "projection"),
    [
        ("hubert_base_tiny.raw.onnx", "/post_extract_proj/MatMul"),
        ("hf_wav2vec2_conformer.onnx", "/model/feature_projection/projection/MatMul"),  # convs in its layers too
        ("torchaudio_hubert.dynamo.onnx", "node_MatMul_120"),  # no names to go by
    ],
)
def test_the_feature_projection_is_found_by_structure(fixture: str, projection: str) -> None:
    """The MatMul the audio reaches first, and only it: a conformer's layers hold convolutions
    of their own (ungrouped pointwise ones), which the projection's search must not take for
    the feature extractor's."""
    from hubert_fix.analysis.interface import describe
    from hubert_fix.deploy.quantize import feature_projections

    model = onnx.load(FIXTURES / fixture)
    found = feature_projections(model.graph, describe(model, fixture).audio.name)
    assert [n.name for n in model.graph.node if n.output[0] in found] == [projection]


def test_int8_against_the_checkpoint(small: Path, tmp_path: Path) -> None:
    out = tmp_path / "int8.onnx"
    report = hubert_fix.optimize(
        small, out, precision="int8", checkpoint=small.with_suffix(".pt"), quick=True, tolerance=ANY_CPU_INT8_TOLERANCE
    )
    assert (
        report.ok
        and report.checkpoint_validation is not None
        and report.checkpoint_validation.reference == "checkpoint"
    )
    assert all(c.ok for c in report.checkpoint_validation.cases)


def test_int8_that_misses_its_tolerance_writes_nothing(repaired: dict[str, Path], tmp_path: Path) -> None:
    """1e-6 of absolute difference: int8 rounding of the weights alone is far more, on every CPU."""
    out = tmp_path / "int8.onnx"
    code, stdout, err = run_main(
        "optimize", repaired[RAW.name], "-o", out, "--int8", "--tolerance", "max_abs_diff=1e-6"
    )
    assert code == 1, (stdout, err)
    assert "missed its tolerance; nothing written" in stdout and "FAIL" in stdout
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("precision", ["", "--fp32", "--fp16"])
def test_a_broken_tolerance_refuses_to_write(repaired: dict[str, Path], tmp_path: Path, precision: str) -> None:
    out = tmp_path / "opt.onnx"
    args = [
        "optimize",
        repaired[RAW.name],
        "-o",
        out,
        "--tolerance",
        "min_frame_cosine=1.0001",
        *filter(None, [precision]),
    ]
    code, stdout, _ = run_main(*args)
    assert code == 1 and "min frame cosine" in stdout and "nothing written" in stdout
    assert f"({precision.lstrip('-') or 'fp32'}): " in stdout  # --fp32 is ONNX Runtime's default
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_unrepaired_model_is_refused_with_the_next_step(tmp_path: Path) -> None:
    out = tmp_path / "opt.onnx"
    result = run_cli("optimize", RAW, "-o", out)
    assert result.returncode == 3 and not out.exists()
    assert f"repair it first: hubert-fix repair {RAW}" in result.stderr and result.stderr.count("\n") == 1


def test_precision_already_reduced_is_refused(repaired: dict[str, Path], tmp_path: Path) -> None:
    half = tmp_path / "half.onnx"
    assert hubert_fix.optimize(repaired[RAW.name], half, precision="fp16").ok
    code, _, err = run_main("optimize", half, "-o", tmp_path / "int8.onnx", "--int8")
    assert code == 2 and "already optimized for fp16" in err


@pytest.mark.parametrize("bad", ["nope=1", "min_cosine=high", "max_abs_diff"])
def test_bad_tolerance_is_one_line(repaired: dict[str, Path], tmp_path: Path, bad: str) -> None:
    code, stdout, err = run_main("optimize", repaired[RAW.name], "-o", tmp_path / "o.onnx", "--tolerance", bad)
    assert code == 64 and stdout == "" and err.count("\n") == 1 and "--tolerance" in err


def test_external_data_model(tmp_path: Path) -> None:
    folder = tmp_path / "ext"
    folder.mkdir()
    source = folder / "model.onnx"
    onnx.save(
        onnx.load(FIXTURES / "hubert_base_tiny.raw.onnx"), source, save_as_external_data=True,
        all_tensors_to_one_file=True, location="weights.bin", size_threshold=256,
    )  # fmt: skip
    hubert_fix.repair(source, folder / "repaired.onnx")
    out = tmp_path / "out" / "half.onnx"
    out.parent.mkdir()
    report = hubert_fix.optimize(folder / "repaired.onnx", out, precision="fp16")
    assert report.ok and sorted(p.name for p in out.parent.iterdir()) == ["half.onnx", "half.onnx.data"]
    assert hubert_fix.validate(out).ok


@pytest.mark.cuda
def test_fp16_on_cuda(repaired: dict[str, Path], tmp_path: Path) -> None:
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("no CUDAExecutionProvider in this onnxruntime")
    try:
        report = hubert_fix.optimize(repaired[RAW.name], tmp_path / "half.onnx", precision="fp16", device="cuda")
    except hubert_fix.DeviceUnavailableError as exc:
        pytest.skip(str(exc))
    assert report.ok and report.validation.provider == "CUDAExecutionProvider"


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_opset_11_takes_axes_as_attributes(tmp_path: Path, precision: str) -> None:
    repaired, out = tmp_path / "repaired.onnx", tmp_path / "opt.onnx"
    hubert_fix.repair(FIXTURES / "hubert_base_tiny.opset11.raw.onnx", repaired)
    report = hubert_fix.optimize(repaired, out, precision=precision)
    assert report.ok, report.to_dict()
    model = onnx.load(out)
    assert model.opset_import[0].version == 11
    added = [n for n in model.graph.node if n.op_type in ("Unsqueeze", "Squeeze") and "/as_2d_" in n.name]
    assert added and all(len(n.input) == 1 and n.attribute[0].name == "axes" for n in added)
