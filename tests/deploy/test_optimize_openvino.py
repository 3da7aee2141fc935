"""optimize --runtime openvino: OpenVINO IR (OUT.xml + OUT.bin) written only after it passes the
matrix on OpenVINO's CPU plugin against the input model, in the precision it will compute in.

Int8 numerics depend on the CPU's instructions (VNNI or not): the int8 tests pin their
outcome with explicit tolerances, loose to see the write path, impossible to see the
refusal, so that no outcome depends on the machine.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_main
from speech import speech_like

ov = pytest.importorskip("openvino")
soundfile = pytest.importorskip("soundfile")

from hubert_fix.deploy import openvino_ir  # noqa: E402

pytestmark = pytest.mark.usefixtures("openvino_in_fp32")  # outcomes the same on every CPU

LOOSE = ["--tolerance", "max_rel_diff=1", "--tolerance", "min_cosine=0.5", "--tolerance", "min_mean_frame_cosine=0.5",
         "--tolerance", "min_frame_cosine=0"]  # fmt: skip


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("speech")
    paths = []
    for seed in range(3):
        paths.append(folder / f"s{seed}.wav")
        soundfile.write(paths[-1], speech_like(2, seed=seed), 16000)
    return paths


def _record(xml: Path) -> dict[str, object]:
    return json.loads(ov.Core().read_model(xml).get_rt_info(["hubert_fix", "optimize"]).astype(str))


def _left(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_default_is_the_fastest_float_of_this_cpu(repaired_raw: Path, tmp_path: Path) -> None:
    out = tmp_path / "model.xml"
    code, stdout, err = run_main("optimize", repaired_raw, "--runtime", "openvino", "-o", out, "--quick", "--json")
    report = json.loads(stdout)
    assert code == 0, err
    chosen = openvino_ir.float_precisions()[0]
    assert report["precision"] == chosen and report["runtime"] == "openvino"
    assert report["validation"]["provider"] == f"OpenVINO CPU ({chosen})"
    assert all(c["ok"] for c in report["validation"]["cases"]) and len(report["validation"]["cases"]) == 12
    assert _left(tmp_path) == ["model.bin", "model.xml"]  # no staging folder left behind
    record = _record(out)
    assert record["precision"] == chosen and record["validated"]["cases"] == 10
    # what compile_model computes with the config the report names is what was validated
    compiled = ov.Core().compile_model(out, "CPU", report["openvino_config"] or {})
    assert compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name() == {"bf16": "bf16", "fp32": "f32"}[chosen]


def test_fp32_is_validated_and_recorded_with_its_hint(repaired_raw: Path, tmp_path: Path) -> None:
    from hubert_fix import optimize

    report = optimize(repaired_raw, tmp_path / "m.xml", runtime="openvino", precision="fp32", quick=True)
    assert report.ok and report.validation.provider == "OpenVINO CPU (fp32)"
    assert report.openvino_config == {"INFERENCE_PRECISION_HINT": "f32"}
    assert report.validation.tolerance["max_abs_diff"] == 1e-3  # fp32's tolerance, not bf16's
    assert _record(tmp_path / "m.xml")["compile_config"] == {"INFERENCE_PRECISION_HINT": "f32"}


def test_the_fp32_flag_writes_an_fp32_ir_on_every_cpu(repaired_raw: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.xml"
    code, stdout, err = run_main("optimize", repaired_raw, "--runtime", "openvino", "--fp32", "-o", out, "--quick")
    assert code == 0, err
    assert "compile it with {'INFERENCE_PRECISION_HINT': 'f32'}" in stdout
    assert _record(out)["precision"] == "fp32" and _record(out)["compile_config"] == {"INFERENCE_PRECISION_HINT": "f32"}


@pytest.fixture
def bf16_misses(openvino_in_fp32: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """A CPU with bf16 (as OpenVINO reports it), and a bf16 tolerance no output meets: the miss seen on
    an Intel Xeon with AMX (tiny fixture, frame cosine 0.85), on any CPU."""
    from hubert_fix.deploy import optimize
    from hubert_fix.validation.report import Tolerance

    monkeypatch.setattr(openvino_ir, "float_precisions", lambda: ["bf16", "fp32"])
    monkeypatch.setitem(optimize.OPTIMIZED_TOLERANCES, "bf16", Tolerance(max_abs_diff=0.0, min_frame_cosine=1.1))


@pytest.mark.usefixtures("bf16_misses")
def test_the_default_falls_back_to_fp32_when_bf16_misses(repaired_raw: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.xml"
    code, stdout, err = run_main("optimize", repaired_raw, "--runtime", "openvino", "-o", out, "--quick", "--json")
    report = json.loads(stdout)
    assert code == 0, err
    assert report["precision"] == "fp32" and report["openvino_config"] == {"INFERENCE_PRECISION_HINT": "f32"}
    assert report["validation"]["tolerance"]["max_abs_diff"] == 1e-3  # fp32's own tolerance, not bf16's
    assert len(report["dropped"]) == 1 and report["dropped"][0].startswith("bf16: "), report["dropped"]
    record = _record(out)
    assert record["precision"] == "fp32" and record["dropped"] == report["dropped"]
    assert record["compile_config"] == {"INFERENCE_PRECISION_HINT": "f32"}
    code, stdout, _ = run_main("optimize", repaired_raw, "--runtime", "openvino", "-o", tmp_path / "h.xml", "--quick")
    assert code == 0 and "left out: bf16: " in stdout  # the human report says why too


@pytest.mark.usefixtures("bf16_misses")
def test_bf16_asked_for_by_name_is_refused_on_a_miss(repaired_raw: Path, tmp_path: Path) -> None:
    code, stdout, _ = run_main(
        "optimize", repaired_raw, "--runtime", "openvino", "--bf16", "-o", tmp_path / "m.xml", "--quick", "--json"
    )
    report = json.loads(stdout)
    assert code == 1 and not report["ok"] and report["precision"] == "bf16" and not report["dropped"]
    assert _left(tmp_path) == []


def test_bf16_on_a_cpu_without_it_is_refused(
    repaired_raw: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(openvino_ir, "float_precisions", lambda: ["fp32"])
    code, _, err = run_main("optimize", repaired_raw, "--runtime", "openvino", "--bf16", "-o", tmp_path / "m.xml")
    assert code == 2 and "--bf16: this CPU has no bfloat16" in err and err.count("\n") == 1
    assert _left(tmp_path) == []


def test_int8_writes_a_quantized_model_once_it_validates(
    repaired_raw: Path, speech: list[Path], tmp_path: Path
) -> None:
    out = tmp_path / "q.xml"
    args = [
        "optimize",
        repaired_raw,
        "--runtime",
        "openvino",
        "--int8",
        *(a for f in speech for a in ("--calibration-audio", f)),
        "-o",
        out,
        "--quick",
    ]
    code, stdout, err = run_main(*args, *LOOSE, "--json")
    report = json.loads(stdout)  # NNCF's progress never reaches stdout
    assert code == 0, err
    steps = {s["name"]: s for s in report["steps"]}
    assert steps["int8-static"]["count"] > 0 and "3 audio segment(s) of at most 2 s" in steps["int8-static"]["what"]
    names = [c["name"] for c in report["validation"]["cases"]]
    assert names[-4:-1] == ["audio s0.wav", "audio s1.wav", "audio s2.wav"]  # speech is validated too
    model = ov.Core().read_model(out)
    assert any(op.get_type_name() == "FakeQuantize" for op in model.get_ordered_ops())
    assert _record(out)["precision"] == "int8"
    assert _left(tmp_path) == ["q.bin", "q.xml"]  # the float IR NNCF quantized was staged, and is gone
    (projection,) = [op for op in model.get_ordered_ops() if op.get_friendly_name() == "/post_extract_proj/MatMul"]
    assert projection.input(0).get_source_output().get_node().get_type_name() != "FakeQuantize"  # kept float


def test_int8_that_misses_writes_nothing(repaired_raw: Path, speech: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "q.xml"
    args = ["optimize", repaired_raw, "--runtime", "openvino", "--int8", "--calibration-audio", speech[0], "-o", out]
    code, stdout, _ = run_main(*args, "--quick", "--tolerance", "min_frame_cosine=0.9999999", "--json")
    assert code == 1 and not json.loads(stdout)["ok"]
    assert _left(tmp_path) == []


@pytest.mark.parametrize(
    ("flags", "message", "exit_code"),
    [
        (
            ["--int8"],
            "--int8 on OpenVINO is static quantization: give speech to calibrate it on, --calibration-audio",
            64,
        ),
        (["--fp16"], "--fp16: OpenVINO's CPU plugin computes in bf16 or fp32", 64),
        (["--device", "cuda"], "--runtime openvino targets OpenVINO's CPU plugin, not CUDA", 2),
    ],
)
def test_what_openvino_cannot_do_is_one_line(
    repaired_raw: Path, tmp_path: Path, flags: list[str], message: str, exit_code: int
) -> None:
    code, _, err = run_main("optimize", repaired_raw, "--runtime", "openvino", *flags, "-o", tmp_path / "m.xml")
    assert code == exit_code and message in err and err.count("\n") == 1, err
    assert _left(tmp_path) == []


def test_the_output_is_an_xml_whose_bin_is_no_input(repaired_raw: Path, speech: list[Path], tmp_path: Path) -> None:
    code, _, err = run_main("optimize", repaired_raw, "--runtime", "openvino", "-o", tmp_path / "m.onnx")
    assert code == 2 and "written as OUT.xml" in err
    audio = tmp_path / "calibration.bin"
    audio.write_bytes(speech[0].read_bytes())
    code, _, err = run_main(
        "optimize",
        repaired_raw,
        "--runtime",
        "openvino",
        "--calibration-audio",
        audio,
        "-o",
        tmp_path / "calibration.xml",
    )
    assert code == 2 and "is the same file as" in err and audio.read_bytes() == speech[0].read_bytes()


def test_bf16_is_for_openvino(repaired_raw: Path, tmp_path: Path) -> None:
    code, _, err = run_main("optimize", repaired_raw, "--bf16", "-o", tmp_path / "m.onnx")
    assert code == 64 and "ONNX Runtime has no bfloat16 kernels" in err and "--runtime openvino" in err


def test_onnxruntime_targets_are_validated_on_speech_too(
    repaired_raw: Path, speech: list[Path], tmp_path: Path
) -> None:
    code, stdout, err = run_main(
        "optimize", repaired_raw, "--calibration-audio", speech[1], "-o", tmp_path / "m.onnx", "--quick", "--json"
    )
    cases = {c["name"]: c for c in json.loads(stdout)["validation"]["cases"]}
    assert code == 0, err
    assert cases["audio s1.wav"]["compared"] and cases["audio s1.wav"]["ok"]


@pytest.mark.parametrize("fixture", ["hubert_base_tiny.raw.onnx", "hf_hubert.onnx", "hf_wavlm.onnx"])
def test_attention_output_projections_are_found_by_structure(fixture: str) -> None:
    """fairseq's out_proj is a Gemm, transformers' a MatMul (WavLM's a Gemm too): one per layer, whatever its name."""
    from conftest import FIXTURES

    names = openvino_ir.attention_outputs(ov.Core().read_model(FIXTURES / fixture))
    assert len(names) == 2 and all(".0/" in n or ".1/" in n for n in names), names


@pytest.mark.parametrize(
    ("fixture", "name"),
    [
        ("hubert_base_tiny.raw.onnx", "/post_extract_proj/MatMul"),
        ("hf_wavlm.onnx", "/model/feature_projection/projection/MatMul"),
        ("hf_sew.onnx", "/model/feature_projection/MatMul"),
        ("torchaudio_hubert.onnx", "/model/encoder/feature_projection/projection/MatMul"),
        ("hf_wav2vec2_conformer.onnx", "/model/feature_projection/projection/MatMul"),  # convs in its layers too
    ],
)
def test_the_feature_projection_is_found_by_structure(fixture: str, name: str) -> None:
    """The one MatMul reading the convolutions' features: not the layers', whose padding mask reads
    the features' shape, nor, in a conformer, those after its layers' pointwise convolutions."""
    import onnx
    from conftest import FIXTURES

    from hubert_fix.analysis.interface import describe

    audio = describe(onnx.load(FIXTURES / fixture), fixture).audio.name
    assert openvino_ir.feature_projections(ov.Core().read_model(FIXTURES / fixture), audio) == [name]


def test_int8_without_nncf_names_the_extra(
    repaired_raw: Path, speech: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = openvino_ir.importlib.util.find_spec
    monkeypatch.setattr(openvino_ir.importlib.util, "find_spec", lambda name: None if name == "nncf" else real(name))
    args = ["--runtime", "openvino", "--int8", "--calibration-audio", speech[0], "-o", tmp_path / "q.xml", "--quick"]
    code, _, err = run_main("optimize", repaired_raw, *args)
    assert code == 2 and "pip install -e '.[openvino]' in the hubert-fix checkout" in err and err.count("\n") == 1, err
    assert _left(tmp_path) == []


def test_external_data_model_and_its_weights_file(tmp_path: Path) -> None:
    """OpenVINO reads the weights beside the model; OUT.bin may not be that file."""
    import onnx
    from conftest import FIXTURES

    source = tmp_path / "model.onnx"
    onnx.save(
        onnx.load(FIXTURES / "hubert_base_tiny.raw.onnx"), source, save_as_external_data=True,
        all_tensors_to_one_file=True, location="weights.bin", size_threshold=256,
    )  # fmt: skip
    weights = (tmp_path / "weights.bin").read_bytes()
    code, _, err = run_main("optimize", source, "--runtime", "openvino", "-o", tmp_path / "weights.xml")
    assert code == 2 and "weights.bin: output is the same file as" in err, err
    assert (tmp_path / "weights.bin").read_bytes() == weights
    assert run_main("repair", source, "-o", tmp_path / "fixed.onnx")[0] == 0  # weights in fixed.onnx.data
    code, _, err = run_main(
        "optimize", tmp_path / "fixed.onnx", "--runtime", "openvino", "-o", tmp_path / "ov.xml", "--quick"
    )
    assert code == 0, err
    assert ov.Core().compile_model(tmp_path / "ov.xml", "CPU") is not None


def test_openvino_failing_or_crashing_in_conversion_is_exit_2(
    repaired_raw: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    def refuse(source: Path, staged: Path, calibration: object, audio: str) -> int:
        raise RuntimeError(
            "Exception from src/frontends/onnx/frontend/src/core/graph.cpp:1: OpenVINO does not support X"
        )

    monkeypatch.setattr(openvino_ir, "_convert", refuse)
    code, _, err = run_main("optimize", repaired_raw, "--runtime", "openvino", "-o", tmp_path / "m.xml", "--quick")
    assert code == 2 and "OpenVINO failed converting it: OpenVINO does not support X" in err and "src/" not in err
    monkeypatch.setattr(openvino_ir, "_convert", lambda source, staged, calibration, audio: os.abort())
    code, _, err = run_main("optimize", repaired_raw, "--runtime", "openvino", "-o", tmp_path / "m.xml", "--quick")
    assert code == 2 and "OpenVINO crashed while converting" in err and "SIGABRT" in err, err
    assert _left(tmp_path) == []


def test_an_ir_that_cannot_be_written_is_the_disk_not_the_model(
    repaired_raw: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OpenVINO's save_model says only "iostream error" when the disk is full (seen on a full
    tmpfs): the line names the folder it wrote into and the room left there, not the model."""

    def full(*args: object, **kwargs: object) -> None:
        raise RuntimeError("basic_ios::clear: iostream error")

    monkeypatch.setattr(ov, "save_model", full)  # the forked child inherits it
    code, _, err = run_main("optimize", repaired_raw, "--runtime", "openvino", "-o", tmp_path / "m.xml", "--quick")
    assert code == 2 and err.count("\n") == 1, err
    assert f"{tmp_path / '.m.xml.'}" in err and ": cannot write: OpenVINO's save_model failed (basic_ios" in err
    assert "MB free there" in err and "converting" not in err and str(repaired_raw) not in err
    assert _left(tmp_path) == []


def test_calibration_is_speech_in_segments_of_at_most_two_seconds(repaired_raw: Path, tmp_path: Path) -> None:
    """NNCF holds every intermediate tensor of a calibration input at once: a 5 s file is
    calibrated on as 3 segments of 1.67 s, all of its samples, unpadded."""
    import numpy as np
    import onnx

    from hubert_fix.analysis.interface import describe
    from hubert_fix.validation.audio import audio_cases

    path = tmp_path / "long.wav"
    soundfile.write(path, speech_like(5, seed=3), 16000)
    audio = audio_cases([path])
    face = describe(onnx.load(repaired_raw), str(repaired_raw))
    feeds = openvino_ir.calibrating(audio, face)
    sources = [f[face.audio.name] for f in feeds]
    assert [s.shape for s in sources] == [(1, 26667), (1, 26667), (1, 26666)]
    assert np.array_equal(np.concatenate([s[0] for s in sources]), audio[0][1][0])
    assert all(not f[face.mask.name].any() for f in feeds)  # True = padding: none


_QUANTIZING = """
import json
import sys
from pathlib import Path
import openvino as ov
from hubert_fix.analysis.interface import describe
from hubert_fix.deploy import openvino_ir
from hubert_fix.onnxio.reading import load_model
from hubert_fix.validation.audio import audio_cases
model, wav, staged = map(Path, sys.argv[1:])
face = describe(load_model(model).proto, model.name)
feeds = openvino_ir.calibrating(audio_cases([wav]), face)
events = []
compile_model = ov.Core.compile_model
def compiling(core, *args, **kwargs):
    events.append("compile")
    return compile_model(core, *args, **kwargs)
ov.Core.compile_model = compiling
openvino_ir.page_out = lambda paths: events.append(("page_out", [(Path(p).name, Path(p).is_file()) for p in paths]))
quantized = openvino_ir._convert(model, staged, feeds, face.audio.name)
print(json.dumps([quantized, events, sys.modules.get("torch") is not None]), file=sys.stderr)
"""


def test_quantizing_hands_back_the_float_weights_once_compiled_and_never_imports_torch(
    repaired_raw: Path, speech: list[Path], tmp_path: Path
) -> None:
    """NNCF's statistics model computes from the plugin's copies of the weights: the float IR's
    mapped pages are handed back at the first calibration input, after that compilation; and
    NNCF's import of torch, which its OpenVINO backend does not use, is refused."""
    import subprocess
    import sys

    staged = tmp_path / "model.xml"
    done = subprocess.run(
        [sys.executable, "-c", _QUANTIZING, repaired_raw, speech[0], staged], capture_output=True, text=True, check=True
    )
    quantized, events, torch_imported = json.loads(done.stderr.strip().splitlines()[-1])
    assert quantized > 0 and staged.is_file() and staged.with_suffix(".bin").is_file()
    assert events[0] == "compile" and events.count(["page_out", [["float.bin", True]]]) == 1, events
    assert not torch_imported
