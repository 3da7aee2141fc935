"""What a new user hit, from a fresh clone with only the README and --help: one test each."""

from __future__ import annotations

import json
import shlex
import shutil
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import CASES, FIXTURES, RAW, run_cli, run_main
from test_cli import assert_one_clear_line, stderr_on_a_terminal

sys.path.insert(0, str(FIXTURES.parent))
from fuzz.known import absurd_reshape_constant, unknown_data_type  # noqa: E402


def test_quick_leaves_out_the_10_s_case_of_a_reference_file_too() -> None:
    code, out, _ = run_main("validate", RAW, "--reference", CASES, "--quick", "--json")
    assert max(c["samples"] for c in json.loads(out)["cases"]) < 160000
    code, out, _ = run_main("validate", RAW, "--reference", CASES, "--json")
    assert max(c["samples"] for c in json.loads(out)["cases"]) == 160000


def test_a_second_repair_keeps_the_first_ones_record(tmp_path: Path) -> None:
    first, second = tmp_path / "first.onnx", tmp_path / "second.onnx"
    assert run_main("repair", RAW, "-o", first)[0] == 0
    assert run_main("repair", first, "-o", second)[0] == 0
    meta = {p.key: p.value for p in onnx.load(str(second), load_external_data=False).metadata_props}
    record = json.loads(meta["hubert_fix.repair"])
    assert record["edits"] == [] and len(record["history"]) == 1 and len(record["history"][0]["edits"]) == 2


def test_in_place_needs_no_output_path(tmp_path: Path) -> None:
    model = tmp_path / "model.onnx"
    model.write_bytes(RAW.read_bytes())
    assert run_main("repair", model, "--in-place")[0] == 0
    assert run_main("check", model)[0] == 0
    code, _, err = run_main("repair", model)
    assert code == 2 and "-o OUT.onnx, or --in-place" in err


@pytest.mark.parametrize("args", [("check", "-"), ("repair", str(RAW), "-o", "-"), ("validate", "-")])
def test_dash_is_refused_clearly(args: tuple[str, ...]) -> None:
    result = run_cli(*args)
    assert result.returncode == 2 and result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1 and "standard input/output is not supported" in result.stderr


@pytest.mark.parametrize("where", ["before", "after"])
def test_verbose_logs_before_or_after_the_command(where: str) -> None:
    args = ["-v", "check", RAW] if where == "before" else ["check", "-v", RAW]
    result = run_cli(*args)
    assert result.returncode == 1 and "where-broadcast: 1 edit(s)" in result.stderr


def test_progress_says_what_happens_and_overwrites_itself(tmp_path: Path) -> None:
    _, terminal = stderr_on_a_terminal("validate", RAW, "--quick", "--device", "cpu")
    assert "\r\x1b[Khubert-fix: [1/10]" in terminal and "\r\x1b[Khubert-fix: [10/10]" in terminal
    assert terminal.count("[1/10]") == 1 and "\nhubert-fix: [" not in terminal  # each line overwrites the last


def test_help_is_plain_text_and_complete() -> None:
    texts = [run_cli("--help").stdout] + [
        run_cli(c, "--help").stdout for c in ("check", "repair", "validate", "export", "demo", "passes")
    ]
    assert all("``" not in text for text in texts)
    repair, validate = (" ".join(text.split()) for text in texts[2:4])  # unwrapped
    assert "MODEL.onnx the ONNX model" in repair and "where to write the repaired model" in repair
    assert "CUDAExecutionProvider really runs" in validate
    for text in texts[1:]:
        usage_end = text.index("\n\n")
        assert text[usage_end + 2 :].strip().split("\n")[0], "every command has a description"


def test_the_refusal_report_says_planned_not_made(tmp_path: Path) -> None:
    out = tmp_path / "y.onnx"
    code, stdout, err = run_main("repair", FIXTURES / "hubert_base_tiny.dynamo_batch1/model.onnx", "-o", out)
    assert code == 3 and not out.exists() and "nothing written" in err
    assert "edit (planned)" in stdout and "edit (made)" not in stdout


def test_skipping_every_pass_checks_nothing_and_says_so() -> None:
    args = [
        a
        for name in ("where-broadcast", "frozen-pad", "frozen-slice", "ctc-mask-scatter", "frozen-batch")
        for a in ("--skip", name)
    ]
    code, out, err = run_main("check", RAW, *args)
    assert code == 2 and "no pass to run" in err and out == ""


@pytest.mark.parametrize("damage", [unknown_data_type, absurd_reshape_constant])
@pytest.mark.parametrize("command", ["check", "repair"])
def test_damage_the_loader_let_through_is_exit_2(tmp_path: Path, damage, command: str) -> None:
    path, out = tmp_path / "damaged.onnx", tmp_path / "out.onnx"
    damage(RAW, path)
    result = run_cli(command, path, *(["-o", out] if command == "repair" else []))
    assert_one_clear_line(result, path)
    assert "damaged ONNX model" in result.stderr and not out.exists()


def test_an_absurd_shape_the_loader_cannot_see_is_refused_in_bounded_memory(tmp_path: Path) -> None:
    # 2**35 is below the loader's bound, so shape inference meets it: it must stop at its budget.
    path = tmp_path / "huge.onnx"
    absurd_reshape_constant(RAW, path, value=1 << 35)
    result = run_cli("check", path)
    assert_one_clear_line(result, path)
    assert "shape inference needs more than" in result.stderr


def test_junit_xml_has_a_testcase_per_check(tmp_path: Path) -> None:
    import xml.etree.ElementTree as ET

    report = tmp_path / "junit.xml"
    code, out, _ = run_main("validate", RAW, "--reference", CASES, "--quick", "--junit-xml", report, "--json")
    suite = ET.parse(report).getroot().find("testsuite")
    cases = suite.findall("testcase")
    assert code == 1 and len(cases) == len(json.loads(out)["cases"]) == int(suite.get("tests"))
    failed = [c for c in cases if c.find("failure") is not None]
    assert len(failed) == int(suite.get("failures")) >= 2
    silent = next(c for c in cases if c.get("name").startswith("frames == C (32), batch 1 padded"))
    assert "max abs diff" in silent.find("failure").text  # the figures that failed it
    assert any(c.find("skipped") is None for c in cases)


def test_junit_marks_ran_cases_as_not_compared(tmp_path: Path) -> None:
    import xml.etree.ElementTree as ET

    report = tmp_path / "junit.xml"
    assert run_main("validate", FIXTURES / "hf_hubert.onnx", "--quick", "--junit-xml", report)[0] == 0
    outs = [c.find("system-out") for c in ET.parse(report).getroot().iter("testcase")]
    assert sum(o is not None and o.text.startswith("ran, not compared") for o in outs) == 10


def test_junit_output_path_is_checked_before_any_work(tmp_path: Path) -> None:
    code, out, err = run_main("validate", RAW, "--junit-xml", tmp_path / "missing" / "r.xml")
    assert code == 2 and out == "" and "does not exist" in err


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


def test_missing_extra_names_torch_and_a_command_that_pins_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from hubert_fix import exporter
    from hubert_fix.errors import MissingExtraError

    for name in ("trace", "loading", "modules", "finetuned"):  # as if never imported
        monkeypatch.delitem(sys.modules, f"hubert_fix.exporter.{name}", raising=False)
        monkeypatch.delattr(exporter, name, raising=False)
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(MissingExtraError) as caught:
        exporter.require()
    message = str(caught.value)
    assert "torch is not installed" in message and "pip install torch==2.13.0 'hubert-fix[export]'" in message
    monkeypatch.setitem(sys.modules, "fairseq", None)  # a light install: neither is there
    with pytest.raises(MissingExtraError, match="torch and fairseq are not installed"):
        exporter.require()


def test_contradictory_repair_options_are_refused(tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    shutil.copyfile(RAW, model)
    code, _, err = run_main("repair", model, "--in-place", "-o", tmp_path / "other.onnx")
    assert code == 2 and "give one of them" in err and not (tmp_path / "other.onnx").exists()
    assert run_main("repair", model, "--in-place", "-o", model)[0] == 0  # -o MODEL says the same as --in-place


def test_a_model_given_as_the_reference_is_named_as_such(tmp_path: Path) -> None:
    code, _, err = run_main("validate", RAW, "--reference", RAW, "--quick")
    assert code == 2 and "not a reference file written by hubert-fix" in err and "allow_pickle" not in err


def test_passes_prints_plain_text() -> None:
    code, out, _ = run_main("passes")
    assert code == 0 and "``" not in out and "'pad = K - T'" in out


def test_the_silent_case_is_never_shown_as_passed_without_a_reference() -> None:
    code, out, _ = run_main("validate", FIXTURES / "hf_hubert.onnx", "--quick", "--json")
    statuses = {c["name"]: c["status"] for c in json.loads(out)["cases"]}
    assert statuses["frames == C (32), batch 1 padded"] == "RAN"
    assert np.all([s in ("PASS", "RAN") for s in statuses.values()])
