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
@pytest.mark.usefixtures("fresh_process")
def test_any_crash_in_session_creation_is_exit_2(monkeypatch, crash, command: str) -> None:
    monkeypatch.setattr(session, "_cpu_load_error", crash)
    code, _, err = run_main(command, RAW)
    name = "SIGSEGV" if crash is _segfault else "SIGABRT"
    assert code == 2 and err.count("\n") == 1 and f"ONNX Runtime crashed while loading {RAW} ({name}" in err, err


@pytest.mark.usefixtures("fresh_process")
def test_a_session_creation_that_hangs_is_stopped(monkeypatch) -> None:
    monkeypatch.setattr(session, "_cpu_load_error", lambda *a: time.sleep(60))
    monkeypatch.setattr(isolation, "TIMEOUT_S", 1)
    started = time.monotonic()
    code, _, err = run_main("check", RAW)
    assert code == 2 and "did not finish loading" in err and time.monotonic() - started < 30


@pytest.mark.usefixtures("fresh_process")
def test_a_bug_in_the_child_is_an_internal_error(monkeypatch) -> None:
    monkeypatch.setattr(session, "_cpu_load_error", lambda *a: None.shape)
    assert run_main("check", RAW)[0] == 4


def test_what_onnxruntime_says_still_comes_back_from_the_child(tmp_path: Path) -> None:
    path = tmp_path / "bad.onnx"
    model = onnx.load(str(RAW))
    model.opset_import[0].version = 99  # ORT refuses it with a message of its own
    assert "opset" in (session.load_error(model.SerializeToString(), str(path)) or "").lower()


# ---------------------------------------------------------------- answers kept by what they depend on


@pytest.mark.usefixtures("fresh_process")
def test_an_answer_is_given_again_for_the_same_key_and_never_a_crash() -> None:
    def pid() -> bytes:
        return str(os.getpid()).encode()

    first = isolation.in_child(pid, key=b"a")
    assert first != str(os.getpid()).encode()  # computed in a child
    assert isolation.in_child(pid, key=b"a") == first  # kept: no second child
    assert isolation.in_child(pid, key=b"b") != first  # another key, another child
    assert isolation.in_child(pid) != isolation.in_child(pid)  # no key: a child each time
    with pytest.raises(isolation.Crashed):
        isolation.in_child(lambda: _abort() or b"", key=b"c")
    assert isolation.in_child(pid, key=b"c") not in (first, b"")  # a crash was not kept


@pytest.mark.usefixtures("fresh_process")
def test_kept_answers_are_bounded(monkeypatch) -> None:
    monkeypatch.setattr(isolation, "KEPT_ANSWERS", 2)
    for key in (b"a", b"b", b"a", b"c"):  # "a" used again: "b" is the least recently used
        isolation.in_child(lambda answer=key: answer, key=key)
    assert isolation.in_child(lambda: b"new", key=b"a") == b"a"
    assert isolation.in_child(lambda: b"new", key=b"b") == b"new"


@pytest.mark.usefixtures("fresh_process")
def test_a_graph_is_loaded_and_inferred_once_per_process(monkeypatch) -> None:
    """check, then repair of the same file: the second asks no child anything (same bytes);
    the answers are the same as a fresh process's."""
    forks = []
    real = isolation._computed
    monkeypatch.setattr(isolation, "_computed", lambda work: forks.append(1) or real(work))
    first = run_main("check", RAW, "--json")
    asked = len(forks)
    assert asked >= 2 and run_main("check", RAW, "--json") == first and len(forks) == asked
