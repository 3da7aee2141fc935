"""Shared fixtures: paths to the committed fixture files and a runner for the console script."""

from __future__ import annotations

import contextlib
import functools
import io
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import pytest

from hubert_fix.validation.report import Tolerance

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
sys.path.insert(0, str(FIXTURES))
from catalog import EXPORTS  # noqa: E402

RAW = FIXTURES / "hubert_base_tiny.raw.onnx"
RAW_BY_OPSET = {
    e.opset: FIXTURES / e.file
    for e in EXPORTS
    if e.checkpoint == "hubert_base_tiny"
    and e.exporter == "torchscript"
    and ".opset" in e.file
    and not e.tool
    or e.file == RAW.name
}
CASES = FIXTURES / "hubert_base_tiny.cases.npz"
CHECKPOINT = FIXTURES / "hubert_base_tiny.pt"
SCRIPT = Path(sys.executable).parent / "hubert-fix"


def run_cli(*args: object, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run the installed ``hubert-fix`` console script as a pipeline would (no TTY)."""
    assert SCRIPT.exists(), f"console script not installed next to {sys.executable}"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=600, cwd=cwd, env=env)


def run_main(*args: object) -> tuple[int, str, str]:
    """``hubert-fix ARGS`` in this process (faster than the console script): code, stdout, stderr."""
    from hubert_fix.cli import main

    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main([str(a) for a in args])
    return code, stdout.getvalue(), stderr.getvalue()


def run_in_process(*args: object) -> subprocess.CompletedProcess[str]:
    """``hubert-fix ARGS`` as ``run_cli`` answers it, run in this process (``run_main``): for tests of
    what a command does rather than of the console script, where a fresh interpreter would import
    torch and fairseq again for every call."""
    code, out, err = run_main(*args)
    return subprocess.CompletedProcess(["hubert-fix", *map(str, args)], code, out, err)


def cuda_runs() -> bool:
    """True only where CUDAExecutionProvider really runs a session (onnxruntime-gpu lists
    it even without a GPU, then falls back to CPU)."""
    from hubert_fix.onnxio.session import CUDA, create_session

    try:
        return create_session(str(RAW), str(RAW), device="auto").get_providers()[0] == CUDA
    except Exception:  # no usable GPU: the session fails or falls back
        return False


def fp16_transpose_matmul(path: Path) -> Path:
    """Cast to float16, Transpose [1, 0, 2], MatMul: onnxruntime 1.31's CPU provider
    (MatmulTransposeFusion with the NchwcTransformer) dies of SIGSEGV creating a session."""
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("Cast", ["x"], ["half"], to=TensorProto.FLOAT16),
        helper.make_node("Transpose", ["half"], ["t"], perm=[1, 0, 2]),
        helper.make_node("MatMul", ["t", "w"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "crash", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", "T", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT16, ["T", "B", 4])],
        [onnx.numpy_helper.from_array(np.ones((4, 4), np.float16), "w")],
    )  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    return path


@functools.cache
def float16_crash_here() -> bool:
    """Whether this ONNX Runtime, on this CPU, crashes creating a default CPU session for a float16
    Transpose feeding a MatMul (its NCHWc layout optimizations depend on the CPU): float16
    transformers then crash it too, and what check and repair say of them follows."""
    with tempfile.TemporaryDirectory() as tmp:
        path = fp16_transpose_matmul(Path(tmp) / "crash.onnx")
        code = f"import onnxruntime as o; o.InferenceSession({str(path)!r}, providers=['CPUExecutionProvider'])"
        return subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120).returncode < 0


#: int8 bounds every CPU meets (the default tolerance's margin depends on VNNI: ONNX Runtime's
#: u8 x s8 MatMuls saturate without it); ``tests/deploy/test_optimize.py`` has the measurement.
ANY_CPU_INT8_TOLERANCE = Tolerance(max_rel_diff=0.1, min_cosine=0.98, min_mean_frame_cosine=0.98, min_frame_cosine=0.9)


@pytest.fixture
def openvino_in_fp32(monkeypatch: pytest.MonkeyPatch) -> None:
    """OpenVINO computes float32 on every CPU. Its bf16 on the tiny models (C = 32) was within
    tolerance on an AMD EPYC with AVX-512 BF16 and far outside it on an Intel Xeon with AMX
    (frame cosine 0.85 at 1 s; base stays at 0.99994 there), so a test of the pipeline in
    bf16 would pass or fail with the CPU: validation refusing it there is the product working."""
    from hubert_fix.deploy import openvino_ir
    from hubert_fix.onnxio import openvino

    compile_ = openvino._compile
    monkeypatch.setattr(openvino, "_compile", lambda path, precision: compile_(path, precision or "fp32"))
    monkeypatch.setattr(openvino_ir, "float_precisions", lambda: ["fp32"])


def export_hubert(folder: Path, name: str, conv_channels: int) -> Path:
    """A HuBERT of base's conv structure with ``conv_channels`` channels and 2 layers of 256, exported and
    repaired by hubert-fix (needs the [export] extra): wide enough for int8's real behaviour, small to build."""
    pytest.importorskip("fairseq")
    import make_fixtures
    from catalog import CHECKPOINTS

    spec = CHECKPOINTS["hubert_base_tiny"]
    c = conv_channels
    config = {
        **spec.model, "conv_feature_layers": f"[({c},10,5)] + [({c},3,2)]*4 + [({c},2,2)]*2", "encoder_layers": 2,
        "encoder_embed_dim": 256, "encoder_ffn_embed_dim": 1024, "encoder_attention_heads": 4, "conv_pos": 16,
        "conv_pos_groups": 4, "final_dim": 64,
    }  # fmt: skip
    make_fixtures.build_checkpoint(spec, folder / f"{name}.pt", config)
    code, _, err = run_main("export", folder / f"{name}.pt", "-o", folder / f"{name}.onnx", "-q")
    assert code == 0, err
    return folder / f"{name}.onnx"


@pytest.fixture(scope="session")
def repaired_raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``RAW`` repaired by hubert-fix, once per run (tests read it, never change it)."""
    out = tmp_path_factory.mktemp("repaired_raw") / "fixed.onnx"
    assert run_main("repair", RAW, "-o", out)[0] == 0
    return out


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture
def fresh_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process as if it had answered nothing in a child yet (``isolation.in_child``'s kept
    answers): for tests that make the child crash or fail on a graph an earlier test may have
    had answered already."""
    from hubert_fix.onnxio import isolation

    monkeypatch.setattr(isolation, "_answers", type(isolation._answers)())


def assert_one_clear_line(result, path: Path, code: int = 2) -> None:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert str(path) in lines[0] and "Traceback" not in result.stderr


def stderr_on_a_terminal(*args: object) -> tuple[bytes, str]:
    """Run the script with stderr on a pseudo-terminal: (stdout, what the terminal got)."""
    import os
    import pty
    import subprocess

    from conftest import SCRIPT

    primary, secondary = pty.openpty()
    with subprocess.Popen([str(SCRIPT), *map(str, args)], stdout=subprocess.PIPE, stderr=secondary) as proc:
        os.close(secondary)
        stdout, _ = proc.communicate(timeout=300)
    chunks = []
    while True:
        try:
            chunk = os.read(primary, 65536)
        except OSError:  # EIO once the terminal's other side is closed and drained
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(primary)
    return stdout, b"".join(chunks).decode()
