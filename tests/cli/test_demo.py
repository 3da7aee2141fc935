"""hubert-fix demo: the whole job on the embedded checkpoint, every step a command that can be copied."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import pytest
from conftest import FIXTURES, run_cli, run_main


def test_demo_commands_can_be_copied(tmp_path: Path) -> None:
    demo = tmp_path / "a folder"
    result = run_cli("demo", "--out-dir", demo)
    assert result.returncode == 0, result.stderr
    commands = [shlex.split(line.strip()[2:]) for line in result.stdout.splitlines() if line.strip().startswith("$ ")]
    assert [c[1] for c in commands] == ["export", "validate", "check", "repair", "validate"]
    assert (demo / "hubert_base_tiny.pt").is_file()  # the checkpoint the commands name is there
    check, repair = commands[2], commands[3]
    assert run_cli(*check[1:]).returncode == 1
    fixed = tmp_path / "again.onnx"
    assert run_cli(*repair[1:-1], fixed).returncode == 0 and run_cli("check", fixed).returncode == 0
    # the README's sample of the summary is what the demo prints, figures aside (they vary with the CPU)
    import re

    readme = (FIXTURES.parent / "README.md").read_text()
    sample = readme[readme.index("```\nsummary\n") + 4 :].split("```")[0].strip().splitlines()
    printed = result.stdout[result.stdout.index("summary\n") :].splitlines()[: len(sample)]
    shape = lambda line: re.sub(r"\d+(\.\d+)?(e[+-]\d+)?", "N", line.rstrip())  # noqa: E731
    assert [shape(line) for line in printed] == [shape(line) for line in sample]


def test_without_the_export_extra_the_demo_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A light install: exit 2 naming the extra, before a step is printed or a file is written."""
    from hubert_fix import exporter

    for name in ("trace", "loading", "modules", "finetuned"):  # as if never imported
        monkeypatch.delitem(sys.modules, f"hubert_fix.exporter.{name}", raising=False)
        monkeypatch.delattr(exporter, name, raising=False)
    monkeypatch.setitem(sys.modules, "torch", None)
    monkeypatch.setitem(sys.modules, "fairseq", None)
    demo = tmp_path / "demo"
    code, out, err = run_main("demo", "--out-dir", demo)
    assert code == 2 and out == "" and "torch and fairseq are not installed" in err and err.count("\n") == 1
    assert not demo.exists()
