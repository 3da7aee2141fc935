"""A crash of ONNX Runtime on a user's file is exit 2 with one line, not a dead process.

Session creation on a user's file runs first in a forked child (hubert_fix.session): a
signal there becomes OrtCrash. Shown with a graph that crashes onnxruntime 1.31's CPU
provider, and, for any onnxruntime, with a child that dies as a crash would.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import onnx
import pytest
from conftest import RAW, float16_crash_here, fp16_transpose_matmul, run_main

from hubert_fix.onnxio import isolation, session


@pytest.mark.parametrize("command", ["check", "repair", "validate"])
def test_a_model_that_crashes_onnxruntime_is_exit_2(tmp_path: Path, command: str) -> None:
    path = fp16_transpose_matmul(tmp_path / "crash.onnx")
    if not float16_crash_here():
        pytest.skip("this onnxruntime does not crash on the graph (see the simulated crashes below)")
    argv = [command, path] + (["-o", tmp_path / "out.onnx"] if command == "repair" else [])
    code, _, err = run_main(*argv)
    assert code == 2 and err.count("\n") == 1 and f"ONNX Runtime crashed while loading {path}" in err, err
    assert not (tmp_path / "out.onnx").exists()


def _segfault(*args: object) -> None:
    os.kill(os.getpid(), signal.SIGSEGV)


def _abort(*args: object) -> None:
    os.abort()


@pytest.mark.parametrize("crash", [_segfault, _abort], ids=["SIGSEGV", "SIGABRT"])
@pytest.mark.parametrize("command", ["check", "validate"])
def test_any_crash_in_session_creation_is_exit_2(monkeypatch, crash, command: str) -> None:
    monkeypatch.setattr(session, "_cpu_load_error", crash)
    code, _, err = run_main(command, RAW)
    name = "SIGSEGV" if crash is _segfault else "SIGABRT"
    assert code == 2 and err.count("\n") == 1 and f"ONNX Runtime crashed while loading {RAW} ({name}" in err, err


def test_a_session_creation_that_hangs_is_stopped(monkeypatch) -> None:
    monkeypatch.setattr(session, "_cpu_load_error", lambda *a: time.sleep(60))
    monkeypatch.setattr(isolation, "TIMEOUT_S", 1)
    started = time.monotonic()
    code, _, err = run_main("check", RAW)
    assert code == 2 and "did not finish loading" in err and time.monotonic() - started < 30


def test_a_bug_in_the_child_is_an_internal_error(monkeypatch) -> None:
    monkeypatch.setattr(session, "_cpu_load_error", lambda *a: None.shape)
    assert run_main("check", RAW)[0] == 4


def test_what_onnxruntime_says_still_comes_back_from_the_child(tmp_path: Path) -> None:
    path = tmp_path / "bad.onnx"
    model = onnx.load(str(RAW))
    model.opset_import[0].version = 99  # ORT refuses it with a message of its own
    assert "opset" in (session.load_error(model.SerializeToString(), str(path)) or "").lower()
