"""The README and the pages of docs/ say what a run shows: their tables, recipes, commands, code,
paths, links and figures are checked against the code (onnx-graphsurgeon's ``test_examples``)."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import onnx
import onnx_builders
import pytest
from conftest import CASES, CHECKPOINT, FIXTURES, RAW, run_main

ROOT = FIXTURES.parent
README = (ROOT / "README.md").read_text()
#: Every page a reader is sent to: the front door and the topics behind it.
PAGES = {"README.md": README, **{f"docs/{p.name}": p.read_text() for p in sorted((ROOT / "docs").glob("*.md"))}}
ALL = "\n".join(PAGES.values())


def _page(name: str) -> str:
    return PAGES[name]


def test_the_set_up_commands_are_the_ones_ci_runs() -> None:
    """The README's first two commands are what .ci/run does on a clean clone."""
    set_up, tests = re.findall(r"```bash\n(.+?)\n```", README)[:2]
    ci = (ROOT / ".ci" / "run").read_text()
    install, demo = set_up.split(" && .venv/bin/hubert-fix demo")[0], "hubert-fix demo"
    assert install.split(" && ")[1] in ci.replace(" -q", "") and demo in ci
    assert tests in ci


def test_the_benchmark_block_is_the_benchmarks_own_output() -> None:
    """Figures on the benchmarks page come from bench/results/results.md, which bench/run.py writes."""
    start, end = "<!-- bench/results/results.md: written by", "<!-- end of bench/results/results.md -->"
    assert start in (ROOT / "bench" / "tables.py").read_text() and end in (ROOT / "bench" / "tables.py").read_text()
    block = _page("docs/benchmarks.md").split(start, 1)[1].split("-->\n", 1)[1].split(end, 1)[0]
    written = (ROOT / "bench" / "results" / "results.md").read_text()
    assert block == written
    assert re.match(r"Machine: .+\nRun \d{4}-\d\d-\d\d \d\d:\d\d UTC: `python bench/run.py[^`]*` \(\d+ s\)\.", written)


def test_the_readme_command_table_matches_the_parser() -> None:
    """Every option a row names exists for that command, and every option of the command is in its row."""
    from hubert_fix.cli.parser import build_parser

    table = README[README.index("| command | does | exit codes |") :].split("\n\n")[0]
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices  # noqa: SLF001 - the subparsers
    rows = {}
    for line in table.splitlines()[2:]:
        usage = line.split(" | ")[0]
        name = re.search(r"`hubert-fix (\w+)", usage).group(1)
        rows[name] = rows.get(name, "") + usage
    assert set(rows) == set(commands)
    for name, sub in commands.items():
        options = {o for a in sub._actions for o in a.option_strings if o.startswith("--")}  # noqa: SLF001
        options -= {"--help", "--quiet", "--verbose"}  # every command's, said below the table
        named = set(re.findall(r"(--[a-z][a-z0-9-]*)", rows[name]))
        assert named <= options, (name, named - options)
        assert options <= named | {"--output"} if "-o OUT" in rows[name] else options <= named, (name, options - named)


def test_the_pipeline_recipe_runs_as_written(tmp_path: Path) -> None:
    """docs/pipeline.md's gate.sh on a clean, a repairable, a refused and a damaged model."""
    pipeline = _page("docs/pipeline.md")
    script = pipeline[pipeline.index("#!/usr/bin/env bash\n# gate.sh") :].split("```")[0]
    (tmp_path / "gate.sh").write_text(script)
    models = tmp_path / "models"
    models.mkdir()
    shutil.copyfile(RAW, models / "repairable.onnx")
    assert run_main("repair", RAW, "-o", models / "clean.onnx")[0] == 0
    onnx.save(onnx_builders.where_model(["b2", "t2"], ["batch", "frames", 8]), str(models / "refused.onnx"))
    (models / "damaged.onnx").write_bytes(b"\x08\x07garbage")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(["bash", "gate.sh"], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 1, result.stderr  # two models are not deployable
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["clean.onnx", "repairable.onnx"]
    reports = {p.name: json.loads(p.read_text()) for p in (tmp_path / "reports").glob("*.json")}
    assert reports["damaged.check.json"]["exit_code"] == 2 and reports["refused.check.json"]["unrepairable"] == 1
    assert reports["repairable.repair.json"]["edits"] == 2 and reports["clean.repair.json"]["edits"] == 0
    assert reports["clean.validate.json"]["ok"] and reports["repairable.validate.json"]["ok"]
    assert sorted(p.name for p in (tmp_path / "reports").glob("*.junit.xml")) == [
        "clean.junit.xml",
        "repairable.junit.xml",
    ]
    assert "refused.onnx: not deployable (check exit 3" in result.stderr


def _readme_command_lines() -> list[str]:
    """Every hubert-fix command line the pages show: in code blocks and inline code, not the usage table."""
    lines, prose, fenced = [], [], False
    for line in ALL.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif fenced and not line.lstrip().startswith("#"):
            found = re.search(r"(?:^|\s|/)(hubert-fix [a-z].*)", line.split(" #")[0])
            if found:
                lines.append(found.group(1).split("; then")[0].split(" > ")[0].strip())
        elif not fenced:
            prose.append(line)
    for span in re.findall(r"`((?:\.venv/bin/)?hubert-fix [a-z][^`]*)`", " ".join(prose)):
        words = span.split()
        if (
            "[" not in span and "|" not in span and len(words) > 2 and not words[2].startswith("-")
        ):  # not a usage or a flag's name
            lines.append(span.removeprefix(".venv/bin/"))
    return lines


def test_every_command_the_readme_shows_parses() -> None:
    """A command line copied from a page is accepted by the CLI's parser (options, values, choices)."""
    from hubert_fix.cli.parser import CommandLineError, build_parser

    parser = build_parser()
    lines = _readme_command_lines()
    assert len(lines) >= 10 and {line.split()[1] for line in lines} >= {
        "check",
        "repair",
        "validate",
        "export",
        "optimize",
    }
    for line in lines:
        args = shlex.split(line)[1:]
        try:
            parser.parse_args(args)
        except CommandLineError:
            raise AssertionError(f"docs: {line!r} is not accepted by hubert-fix") from None


@pytest.mark.parametrize("index", [0, 1])
def test_the_python_examples_run_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, index: int) -> None:
    """Each ```python block of the pages (the Python API's), in a folder with the files it names (the fixtures)."""
    blocks = re.findall(r"```python\n(.*?)```", ALL, re.S)
    assert len(blocks) == 2
    if index == 1:
        pytest.importorskip("torch")
        pytest.importorskip("fairseq")
    shutil.copyfile(RAW, tmp_path / "model.onnx")
    shutil.copyfile(CASES, tmp_path / "cases.npz")
    shutil.copyfile(CHECKPOINT, tmp_path / "hubert_base_tiny.pt")
    monkeypatch.chdir(tmp_path)
    exec(compile(blocks[index], f"python block {index + 1}", "exec"), {})


#: A repository path in a README's inline code: a top-level folder of the checkout, then a
#: file (with its suffix) or a folder (with its slash); ``::name`` for a test, ``*`` a glob,
#: ``<...>`` a placeholder. (``hubert_fix/optimize``, a metadata key, is no path.)
_PATH = re.compile(
    r"(?<![\w./-])((?:\.ci|bench|docs|fixtures|fuzz|hubert_fix|passes|tests)/(?:[\w./<>*-]*\.\w+|[\w./<>*-]*/))(::\w+)?"
)
#: Folders a README names as where a tool writes, which a checkout does not hold.
_OUTPUTS = {"fuzz/findings/raw/"}  # the fuzzer's findings (git-ignored)


@pytest.mark.parametrize("readme", [*PAGES, "fuzz/README.md"])
def test_every_path_the_readme_names_exists(readme: str) -> None:
    """A path named in inline code is in the checkout (a test named with ``::`` is in its file);
    nothing outside it (a scratch script in /tmp) is cited as a source."""
    text = (ROOT / readme).read_text()
    spans = re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", text, flags=re.S))
    missing, named = [], 0
    for span in spans:
        assert not re.search(r"(?:^|\s)/tmp/\S+\.py", span), f"{readme} cites a file outside the checkout: {span}"
        for path, test in _PATH.findall(span):
            if "<" in path or path in _OUTPUTS:
                continue
            named += 1
            found = sorted(ROOT.glob(path)) if "*" in path else [ROOT / path] if (ROOT / path).exists() else []
            if not found or (test and not re.search(rf"^def {test[2:]}\(", found[0].read_text(), re.M)):
                missing.append(path + test)
    assert not missing, f"{readme} names what is not in the checkout: {sorted(set(missing))}"


def test_the_exit_codes_agree_with_the_code_and_the_help() -> None:
    """The command table's exit codes per command, the exit-code table and --help say what errors.EXITS says."""
    from hubert_fix.errors import EVERY_COMMAND, EXITS

    table = README[README.index("| command | does | exit codes |") :].split("\n\n")[0]
    for line in table.splitlines()[2:]:
        name = re.search(r"`hubert-fix (\w+)", line).group(1)
        codes = {int(c) for c in re.findall(r"(?:^|, )(\d+) ", line.rsplit(" | ", 1)[1])}
        assert codes == set(EXITS[name]), (name, codes)
    exits = README[README.index("| exit | meaning |") :].split("\n\n")[0]
    listed = {int(c) for row in exits.splitlines()[2:] for c in re.findall(r"\d+", row.split(" | ")[0])}
    assert listed == {c for codes in EXITS.values() for c in codes} | set(EVERY_COMMAND)
    from hubert_fix.cli.parser import build_parser

    parser = build_parser()
    top = " ".join(parser.format_help().split())
    commands = next(a for a in parser._actions if a.dest == "command").choices  # noqa: SLF001 - the subparsers
    for name, codes in EXITS.items():
        described = " ".join(commands[name].format_help().split())
        assert all(f"{code}: {' '.join(meaning.split())}" in described for code, meaning in codes.items()), name
    assert all(f"{code} {' '.join(meaning.split())}" in top for code, meaning in EVERY_COMMAND.items())


def test_the_pipeline_recipe_says_when_hubert_fix_is_not_on_path(tmp_path: Path) -> None:
    pipeline = _page("docs/pipeline.md")
    script = pipeline[pipeline.index("#!/usr/bin/env bash\n# gate.sh") :].split("```")[0]
    (tmp_path / "gate.sh").write_text(script)
    result = subprocess.run(
        ["bash", "gate.sh"], cwd=tmp_path, capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"}, timeout=60
    )
    assert result.returncode == 2 and result.stderr == "gate.sh: cannot run hubert-fix (not on PATH)\n"
    assert not (tmp_path / "reports").exists()


def test_the_readme_installs_extras_the_way_that_works() -> None:
    """hubert-fix is not on PyPI: `pip install 'hubert-fix[extra]'` would fail; the checkout or a wheel works."""
    assert "hubert-fix[" not in ALL and "hubert-fix[" not in (ROOT / "fuzz" / "README.md").read_text()


@pytest.mark.parametrize("page", PAGES)
def test_every_link_between_the_pages_resolves(page: str) -> None:
    """A link to a page (and to a heading in it) lands: the README's index and the pages' cross-references."""
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", PAGES[page]):
        if re.match(r"[a-z]+:", target):
            continue  # a URL
        path, _, anchor = target.partition("#")
        name = str((Path(page).parent / path).as_posix()) if path else page
        name = os.path.normpath(name)
        text = PAGES.get(name) if name in PAGES else (ROOT / name).read_text() if (ROOT / name).is_file() else None
        slugs = {_slug(h) for h in re.findall(r"^#+ (.+)$", text or "", re.M)}
        if text is None or (anchor and anchor not in slugs):
            broken.append(target)
    assert not broken, f"{page}: links that land nowhere: {broken}"


def test_every_page_is_in_the_readmes_index() -> None:
    assert {name for name in PAGES if name.startswith("docs/")} <= set(re.findall(r"\]\((docs/[\w-]+\.md)\)", README))
    assert len(README.splitlines()) <= 250  # a front door


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation but - and _ dropped, spaces as -."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
