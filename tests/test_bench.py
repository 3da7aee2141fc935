"""The benchmark scripts as a new user meets them: their --help, where a run writes, and a
SIGTERM mid-run (``bench/run.py``, ``bench/attention.py``). Nothing here measures anything."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT

BENCH = ROOT / "bench"


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["run", "attention"])
def test_help_is_quiet_and_complete(name: str) -> None:
    if name == "run":
        pytest.importorskip("fairseq")
    result = subprocess.run(
        [sys.executable, BENCH / f"{name}.py", "--help"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr  # no fairseq "Please install tensorboardX"
    parser = _script(name).build_parser()
    assert all(action.help for action in parser._actions), name  # noqa: SLF001 - every option says what it does
    assert parser.description[-1] in ".?" and " ".join(parser.description.split()) in " ".join(result.stdout.split())


def test_a_plain_run_leaves_the_published_results_alone(tmp_path: Path) -> None:
    """bench/results is what docs/benchmarks.md shows: only --publish writes it (with the page)."""
    pytest.importorskip("fairseq")
    run = _script("run")
    assert run.output_folder(None, publish=False) is None  # a new folder in the temp folder
    assert run.output_folder(tmp_path, publish=False) == tmp_path
    assert run.output_folder(None, publish=True) == run.RESULTS == BENCH / "results"
    for out, publish in ((BENCH / "results", False), (tmp_path, True)):
        with pytest.raises(ValueError, match="docs/benchmarks.md shows"):
            run.output_folder(out, publish=publish)


def test_sigterm_removes_the_work_folder(tmp_path: Path) -> None:
    """The base model's work folder holds GBs: a terminated run does not leave it behind."""
    pytest.importorskip("fairseq")
    args = ["--sizes", "base", "--no-variants", "--runs", "1", "--repeats", "1", "--out", tmp_path / "out"]
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    process = subprocess.Popen(
        [sys.executable, BENCH / "run.py", *map(str, args)], stderr=subprocess.PIPE, text=True, env=env
    )
    while not process.stderr.readline().startswith("bench: base: build"):  # the work folder exists, the work began
        assert process.poll() is None, "bench/run.py ended before its work began"
    time.sleep(1)
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM
    assert not list(tmp_path.glob("hubert-fix-bench-*")) and not (tmp_path / "out").exists()
