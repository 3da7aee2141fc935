"""The GPU path: runs only where CUDAExecutionProvider really runs a session.

onnxruntime-gpu lists CUDAExecutionProvider even without a GPU, so the gate is a real
session's providers, not ``get_available_providers()``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import CASES, CHECKPOINT, RAW, cuda_runs

from hubert_fix.onnxio.session import CUDA

pytestmark = pytest.mark.cuda


if not cuda_runs():
    pytest.skip("CUDAExecutionProvider does not run here (no GPU or CUDA libraries)", allow_module_level=True)


@pytest.fixture(scope="module")
def repaired(tmp_path_factory) -> Path:
    from conftest import run_cli

    out = tmp_path_factory.mktemp("cuda") / "fixed.onnx"
    assert run_cli("repair", RAW, "-o", out).returncode == 0
    return out


def test_validate_on_cuda_matches_the_stored_reference(cli, repaired: Path) -> None:
    result = cli("validate", repaired, "--reference", CASES, "--device", "cuda", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["provider"] == CUDA and report["ok"]


def test_auto_picks_cuda(cli, repaired: Path) -> None:
    report = json.loads(cli("validate", repaired, "--quick", "--json").stdout)
    assert report["provider"] == CUDA


def test_fp16_export_validates_on_cuda(cli, tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("fairseq")
    if not torch.cuda.is_available():
        pytest.skip("PyTorch has no CUDA here")
    out = tmp_path / "half.onnx"
    result = cli("export", CHECKPOINT, "-o", out, "--fp16", "--device", "cuda", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)["validation"]
    assert report["precision"] == "fp16" and report["provider"] == CUDA and report["ok"]
