"""Validation's ONNX Runtime sessions compute what the user's default session computes, and
what validation keeps of a run does not keep the run's memory (``onnxio.session``)."""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import cuda_runs

import hubert_fix
from hubert_fix.analysis.interface import describe
from hubert_fix.onnxio.reading import load_model
from hubert_fix.onnxio.session import CPU, CUDA, create_session
from hubert_fix.validation.cases import plan_cases
from hubert_fix.validation.own_outputs import reference_outputs


@pytest.fixture(scope="module")
def int8(repaired_raw: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("int8") / "int8.onnx"
    assert hubert_fix.optimize(repaired_raw, out, precision="int8").ok
    return out


@pytest.mark.parametrize("which", ["fp32", "int8"])
def test_validation_sessions_give_a_default_sessions_bits(which: str, repaired_raw: Path, int8: Path) -> None:
    """Validation runs without ORT's CPU arena (its peak memory stays with the session) and
    with threads that sleep between operators; only where buffers come from and how threads
    wait differ, so every output of the matrix is bit-identical."""
    path = repaired_raw if which == "fp32" else int8
    ours = create_session(str(path), str(path), device="cpu")
    default = ort.InferenceSession(str(path), providers=[CPU])
    assert ours.get_session_options().enable_cpu_mem_arena is False
    assert default.get_session_options().enable_cpu_mem_arena is True
    assert ours.get_session_options().get_session_config_entry("session.intra_op.allow_spinning") == "0"
    face = describe(onnx.load(path), str(path))
    entries, _ = plan_cases(face, quick=False, stored=None)
    assert len(entries) >= 8
    for case, source, mask, _ in entries:
        feeds = face.feeds(source, mask)
        for a, b in zip(ours.run(None, feeds), default.run(None, feeds)):
            assert np.array_equal(a, b, equal_nan=True), case.name


def test_reference_outputs_own_their_memory(repaired_raw: Path) -> None:
    """ORT's output arrays keep the session's buffers alive (their base is a capsule): the
    reference that optimize keeps through validation holds copies (README: what optimize costs)."""
    loaded = load_model(repaired_raw)
    face = describe(loaded.proto, "m")
    stored = reference_outputs(loaded, face, quick=True, name="m", audio=[])
    assert stored and all(output.flags.owndata for *_, output in stored)


def test_a_cpu_build_is_not_asked_for_cuda(repaired_raw: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On onnxruntime's CPU build (the light install) device auto runs on CPU without ORT's
    "Specified provider 'CUDAExecutionProvider' is not in available provider names" warning."""
    import warnings

    from onnxruntime.capi import _pybind_state

    cpu_build = lambda: [CPU]  # noqa: E731 - what the CPU build's module reports
    monkeypatch.setattr(_pybind_state, "get_available_providers", cpu_build)  # what ORT's own check reads
    monkeypatch.setattr(ort, "get_available_providers", cpu_build)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        session = create_session(str(repaired_raw), "model", device="auto")
    assert session.get_providers() == [CPU] and not [str(w.message) for w in caught]


def test_auto_without_a_usable_gpu_creates_one_session(repaired_raw: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """onnxruntime-gpu without a usable GPU falls back to its CPU provider: that session is the
    CPU session (a second one would hold the weights twice while it is created)."""
    if cuda_runs():
        pytest.skip("CUDA runs here: auto gives a CUDA session")
    created = []
    real = ort.InferenceSession
    monkeypatch.setattr(ort, "InferenceSession", lambda *a, **k: created.append(k["providers"]) or real(*a, **k))
    monkeypatch.setattr(ort, "get_available_providers", lambda: [CUDA, CPU])  # as the GPU build lists them
    session = create_session(str(repaired_raw), "model", device="auto")
    assert session.get_providers() == [CPU] and created == [[CUDA, CPU]]


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the mmap threshold is glibc's")
@pytest.mark.parametrize("mapped", [False, True])
def test_freed_large_blocks_leave_the_process(mapped: bool) -> None:
    """glibc keeps a freed 20 MB block in its heap once its threshold has risen past it (the
    activations of every case of a validation, otherwise); ``heap.map_large_allocations``
    (which session creation calls) hands such blocks back when freed."""
    code = f"""
import numpy as np
from hubert_fix.onnxio.heap import map_large_allocations
def rss():
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmRSS:")) / 1024
if {mapped}:
    map_large_allocations()
start = rss()
for _ in range(3):
    block = np.ones(20 << 20, dtype=np.uint8)
    above = np.ones(1 << 10, dtype=np.uint8)
    del block
print(rss() - start)
"""
    kept_mb = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert (kept_mb < 2) if mapped else (kept_mb > 15), kept_mb
