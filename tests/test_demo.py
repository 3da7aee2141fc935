"""hubert-fix demo: the whole job on the embedded checkpoint, every step a command that can be copied."""

from __future__ import annotations

import shlex
from pathlib import Path

from conftest import FIXTURES, run_cli


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
