"""The pipeline conventions: the pre-commit hook (``.pre-commit-hooks.yaml``) and the GitHub action
(``action.yml``), each run as pre-commit and GitHub would run it."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import CASES, RAW, ROOT, SCRIPT

HOOKS = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
ACTION = yaml.safe_load((ROOT / "action.yml").read_text())


def _repaired(tmp_path: Path) -> Path:
    out = tmp_path / "clean.onnx"
    assert subprocess.run([SCRIPT, "repair", RAW, "-o", out], capture_output=True).returncode == 0
    return out


def _hook(*files: Path) -> subprocess.CompletedProcess[str]:
    """The hook's entry with the files pre-commit would pass (those its ``files`` pattern matches)."""
    (hook,) = HOOKS
    assert hook["language"] == "python" and hook["entry"].startswith("python -m ")
    staged = [str(f) for f in files if re.search(hook["files"], str(f))]
    entry = [sys.executable, *hook["entry"].split()[1:]]
    return subprocess.run([*entry, *staged], capture_output=True, text=True, timeout=600)


def test_the_hook_passes_clean_models_and_fails_the_rest(tmp_path: Path) -> None:
    clean, notes = _repaired(tmp_path), tmp_path / "notes.txt"
    notes.write_text("not a model")
    assert _hook(clean, notes).returncode == 0  # notes.txt is not passed: only .onnx files
    result = _hook(clean, RAW)
    assert result.returncode == 1  # each file's report says what check found
    assert f"{RAW}: 2 repairable problem(s)" in result.stdout and f"{clean}: nothing to repair" in result.stdout


def test_the_hook_exits_with_the_first_models_verdict(tmp_path: Path) -> None:
    damaged = tmp_path / "damaged.onnx"
    damaged.write_bytes(RAW.read_bytes()[:1000])
    result = _hook(damaged, RAW)
    assert result.returncode == 2 and f"{damaged}: " in result.stderr and f"{RAW}: 2 repairable" in result.stdout


def _gate(tmp_path: Path, model: Path, reference: str = "") -> tuple[subprocess.CompletedProcess[str], dict[str, str]]:
    """The action's gate step, with its inputs as GitHub passes them (env) and hubert-fix on PATH."""
    inputs = {"model": str(model), "output": str(tmp_path / "out" / "model.onnx"), "reference": reference,
              "reports": str(tmp_path / "reports")}  # fmt: skip
    for name, spec in ACTION["inputs"].items():
        inputs.setdefault(name, spec.get("default", ""))
    (step,) = [s for s in ACTION["runs"]["steps"] if s.get("id") == "gate"]
    env = {key: re.sub(r"\$\{\{ inputs\.([a-z-]+) \}\}", lambda m: inputs[m.group(1)], value)
           for key, value in step["env"].items()}  # fmt: skip
    outputs = tmp_path / "github_output"
    env = {**os.environ, **env, "GITHUB_OUTPUT": str(outputs), "PATH": f"{SCRIPT.parent}:{os.environ['PATH']}"}
    result = subprocess.run([shutil.which("bash"), "-c", step["run"]], env=env, capture_output=True, text=True)
    return result, dict(line.split("=", 1) for line in outputs.read_text().splitlines()) if outputs.exists() else {}


def test_the_action_repairs_validates_and_reports(tmp_path: Path) -> None:
    result, outputs = _gate(tmp_path, RAW, str(CASES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "out" / "model.onnx").is_file()
    junit = Path(outputs["junit-xml"])
    assert junit.is_file() and 'failures="0"' in junit.read_text()
    assert json.loads((tmp_path / "reports" / "hubert_base_tiny.raw.repair.json").read_text())["edits"] == 2


def test_the_action_fails_a_refused_model_and_writes_no_copy(tmp_path: Path) -> None:
    import onnx
    import onnx_builders

    refused = tmp_path / "refused.onnx"
    onnx.save(onnx_builders.where_model(["b2", "t2"], ["batch", "frames", 8]), str(refused))
    result, _ = _gate(tmp_path, refused)
    assert result.returncode == 3 and "::error file=" in result.stdout
    assert not (tmp_path / "out" / "model.onnx").exists()


@pytest.mark.parametrize("step", [s["name"] for s in ACTION["runs"]["steps"]])
def test_every_action_step_runs_in_bash(step: str) -> None:
    (spec,) = [s for s in ACTION["runs"]["steps"] if s["name"] == step]
    assert spec["shell"] == "bash" and subprocess.run(["bash", "-n", "-c", spec["run"]]).returncode == 0
