"""Ctrl-C is exit 130 with one line at every moment, in the parent and in every child,
whatever a library turns the interrupt into (``hubert_fix/interrupts.py``).

Each test runs the console script's ``main`` in a process of its own session (so that a
signal to the process group, as a terminal's Ctrl-C sends it, reaches only that run),
with a hook that interrupts it at one chosen moment.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import CHECKPOINT, RAW, SCRIPT

from hubert_fix.onnxio import isolation

#: ONNX Runtime's native module (onnxruntime_pybind11_state) imports numpy while it
#: initialises; a SIGINT handled there leaves it as ImportError ("import numpy failed",
#: "initialization failed"), after printing the KeyboardInterrupt's traceback itself
#: (the start-up imports now run with interrupts deferred: it is raised after them).
IN_ORT_NATIVE_IMPORT = """
import builtins, importlib.abc, importlib.util
NATIVE = "onnxruntime.capi.onnxruntime_pybind11_state"
inside = []

class Loader(importlib.abc.Loader):
    def __init__(self, real):
        self.real = real
    def create_module(self, spec):
        return self.real.create_module(spec)
    def exec_module(self, module):  # the native module's init (pybind11's multi-phase init)
        inside.append(True)
        try:
            return self.real.exec_module(module)
        finally:
            inside.pop()

class Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != NATIVE:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        spec.loader = Loader(spec.loader)
        return spec

real_import = builtins.__import__
def interrupting_import(name, *args, **kwargs):
    if inside and not os.path.exists(FIRED):  # an import made by the native module's init
        open(FIRED, "w").close()
        os.kill(os.getpid(), signal.SIGINT)
    return real_import(name, *args, **kwargs)

sys.meta_path.insert(0, Finder())
builtins.__import__ = interrupting_import
"""

#: Ctrl-C reaches the whole process group the moment the proving child is forked: the
#: interrupt lands inside an at-fork hook (logging's lock release is one), in the parent
#: or in the child, where Python prints it as "Exception ignored" and goes on.
AT_FORK = """
def hit():
    if not os.path.exists(FIRED):
        open(FIRED, "w").close()
        os.killpg(0, signal.SIGINT)
        time.sleep(0.05)  # the handler runs inside this hook
os.register_at_fork({side}=hit)
"""

#: A native module that turns the interrupt into another exception as ONNX Runtime's init
#: does (ImportError), here at a moment of the command (a lazily imported runtime).
CONVERTED = """
import hubert_fix.api
real_check = hubert_fix.api.check
def check(*args, **kwargs):
    try:
        open(FIRED, "w").close()
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
    except KeyboardInterrupt:
        raise ImportError("initialization failed") from None
    return real_check(*args, **kwargs)
hubert_fix.api.check = check
"""

#: fairseq registers its configs while it is imported (``hydra_init``) and logs what
#: interrupts that ("ERROR: common - <class ...CommonConfig>") before it re-raises.
IN_FAIRSEQ_IMPORT = """
from hydra.core.config_store import ConfigStore
real_store = ConfigStore.store
def store(self, *args, **kwargs):
    if kwargs.get("name") == "common" and not os.path.exists(FIRED):
        open(FIRED, "w").close()
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.01)
    return real_store(self, *args, **kwargs)
ConfigStore.store = store
"""

#: A finalizer that runs as the interrupt arrives swallows it ("Exception ignored in
#: __del__"), and the command goes on to a verdict.
IN_A_FINALIZER = """
import hubert_fix.api
class Swallows:
    def __del__(self):
        open(FIRED, "w").close()
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
real_check = hubert_fix.api.check
def check(*args, **kwargs):
    Swallows()  # collected at once
    return real_check(*args, **kwargs)
hubert_fix.api.check = check
"""


def _as_foreground() -> None:
    """SIGINT as a terminal's foreground job has it (a suite run in the background inherits it ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _run_with(
    hook: str, tmp_path: Path, *args: object, sigint: Callable[[], None] = _as_foreground
) -> subprocess.CompletedProcess[str]:
    """``hubert-fix ARGS`` as the console script runs it, ``hook`` installed first."""
    fired = tmp_path / "fired"
    script = tmp_path / "run.py"
    script.write_text(
        f"import os, signal, sys, time\nFIRED = {str(fired)!r}\n{hook}\n"
        "from hubert_fix.__main__ import main\nsys.exit(main(sys.argv[1:]))\n"
    )
    result = subprocess.run(
        [sys.executable, str(script), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        start_new_session=True,
        preexec_fn=sigint,
    )
    assert fired.exists(), "the interrupt was never sent: the hook missed its moment"
    return result


def assert_interrupted(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 130, (result.returncode, result.stdout, result.stderr)
    assert len(result.stderr.splitlines()) == 1 and "interrupted" in result.stderr, result.stderr


@pytest.mark.parametrize(
    "args", [["check", RAW], ["repair", RAW, "-o", "{tmp}/out.onnx", "--json"], ["validate", RAW, "--quick"]]
)
def test_ctrl_c_inside_onnx_runtime_native_import(tmp_path: Path, args: list) -> None:
    """Deterministic: the SIGINT arrives while ONNX Runtime's native module initialises."""
    result = _run_with(IN_ORT_NATIVE_IMPORT, tmp_path, *(str(a).format(tmp=tmp_path) for a in args))
    assert_interrupted(result)
    assert not (tmp_path / "out.onnx").exists()
    if "--json" in args:  # the saved report is one JSON object that says so
        assert json.loads(result.stdout) == {"error": "interrupted; nothing written", "exit_code": 130}


def test_ctrl_c_inside_fairseqs_import(tmp_path: Path, repaired_raw: Path) -> None:
    """torch and fairseq are imported by the command (validate --checkpoint), interrupts deferred."""
    pytest.importorskip("fairseq")
    result = _run_with(IN_FAIRSEQ_IMPORT, tmp_path, "validate", repaired_raw, "--quick", "--checkpoint", CHECKPOINT)
    assert_interrupted(result)


@pytest.mark.parametrize("side", ["after_in_parent", "after_in_child"])
def test_ctrl_c_as_the_proving_child_is_forked(tmp_path: Path, repaired_raw: Path, side: str) -> None:
    result = _run_with(AT_FORK.format(side=side), tmp_path, "check", repaired_raw, "--json")
    assert_interrupted(result)
    assert json.loads(result.stdout)["exit_code"] == 130


def test_a_background_job_that_ignores_ctrl_c_keeps_ignoring_it(tmp_path: Path, repaired_raw: Path) -> None:
    """Started with SIGINT ignored (``cmd &`` in a script), it is left ignored, as Python leaves it."""
    ignored = lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)  # noqa: E731
    result = _run_with(AT_FORK.format(side="after_in_parent"), tmp_path, "check", repaired_raw, sigint=ignored)
    assert result.returncode == 0 and result.stderr == "" and "nothing to repair" in result.stdout


@pytest.mark.parametrize("json_flag", [[], ["--json"]])
def test_ctrl_c_turned_into_another_exception_is_still_130(tmp_path: Path, json_flag: list[str]) -> None:
    """Not an internal error (exit 4, which an ImportError would be): the interrupt was recorded first."""
    result = _run_with(CONVERTED, tmp_path, "check", RAW, *json_flag)
    assert_interrupted(result)
    assert not json_flag or json.loads(result.stdout) == {"error": "interrupted; nothing written", "exit_code": 130}


def test_ctrl_c_swallowed_by_a_finalizer_is_still_130(tmp_path: Path) -> None:
    result = _run_with(IN_A_FINALIZER, tmp_path, "check", RAW)
    assert_interrupted(result)
    assert "not a verdict" in result.stderr


def test_an_interrupted_parent_stops_its_child(tmp_path: Path) -> None:
    """The child ignores SIGINT; the parent, interrupted while it waits, kills and reaps it."""
    pid_file = tmp_path / "child.pid"

    def work() -> bytes:
        pid_file.write_text(str(os.getpid()))
        time.sleep(60)
        return b"too late"

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # whatever this run inherited
    threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT)).start()
    started = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            isolation.in_child(work)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert time.monotonic() - started < 30
    with pytest.raises(ProcessLookupError):  # killed and reaped: no such process
        os.kill(int(pid_file.read_text()), 0)


def _check_raw() -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(SCRIPT), "check", str(RAW)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_as_foreground,
    )


@pytest.fixture(scope="module")
def check_takes() -> float:
    """How long an uninterrupted ``check`` runs here, start-up included (seconds): the faster of
    two runs, so that a first run slowed by a cold cache or load does not put the later shares of
    it past the end of a run (the test then skips)."""
    took = []
    for _ in range(2):
        started = time.monotonic()
        assert _check_raw().wait(timeout=120) == 1
        took.append(time.monotonic() - started)
    return min(took)


@pytest.mark.parametrize("moment", [0.1, 0.25, 0.45, 0.65, 0.8])
def test_ctrl_c_at_any_moment_is_130_and_one_line(check_takes: float, moment: float) -> None:
    """From start-up (the imports, about half the run) into the command itself: at a share
    of the time an uninterrupted run takes on this machine. Only two outcomes skip: the run
    ended before the signal, or the signal came before hubert-fix's first line ran (the
    interpreter's own start-up answers with its traceback: docs/commands.md); a traceback
    through hubert-fix's own code fails."""
    process = _check_raw()
    time.sleep(moment * check_takes)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    if "Traceback" in err and not re.search(r'File "[^"]*/hubert_fix/', err):
        pytest.skip(f"the interrupt at {moment * check_takes:.3f} s came inside the interpreter's start-up")
    if process.returncode in (0, 1) and "Traceback" not in err:  # finished before the signal: nothing to see
        pytest.skip(f"check ended within {moment * check_takes:.2f} s")
    assert process.returncode == 130 and len(err.strip().splitlines()) == 1 and "interrupted" in err, err


def test_ctrl_c_inside_the_start_up_imports() -> None:
    """Deterministic: the interrupt lands while ``hubert_fix.cli`` imports onnx."""
    code = (
        "import sys\n"
        "class Interrupt:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'onnx': raise KeyboardInterrupt\n"
        "sys.meta_path.insert(0, Interrupt())\n"
        "from hubert_fix.__main__ import main\n"
        "sys.exit(main(['check', 'model.onnx']))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, preexec_fn=_as_foreground
    )
    assert result.returncode == 130 and result.stderr == "hubert-fix: interrupted; nothing written\n", result.stderr
