"""How the command line reads and answers: options, help, progress, and the lines it prints."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import onnx
import pytest
from conftest import FIXTURES, RAW, SCRIPT, run_cli, run_main, stderr_on_a_terminal


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
    assert code == 64 and "-o OUT.onnx, or --in-place" in err


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
    from hubert_fix.passes import DEFAULT_PASSES

    args = [a for p in DEFAULT_PASSES for a in ("--skip", p.name)]
    code, out, err = run_main("check", RAW, *args)
    assert code == 64 and "no pass to run" in err and out == ""


def test_contradictory_repair_options_are_refused(tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    shutil.copyfile(RAW, model)
    code, _, err = run_main("repair", model, "--in-place", "-o", tmp_path / "other.onnx")
    assert code == 64 and "give one of them" in err and not (tmp_path / "other.onnx").exists()
    assert run_main("repair", model, "--in-place", "-o", model)[0] == 0  # -o MODEL says the same as --in-place


def test_passes_prints_plain_text() -> None:
    code, out, _ = run_main("passes")
    assert code == 0 and "``" not in out and "'pad = K - T'" in out


def test_skipped_passes_are_no_clean_bill(tmp_path: Path) -> None:
    """What --skip left out is not known: check does not say "nothing to repair" (exit 5, not 0)."""
    skip = ["--skip", "where-broadcast", "--skip", "frozen-slice"]
    code, out, _ = run_main("check", RAW, *skip)
    assert code == 5 and "nothing to repair" not in out and "not run (skipped): where-broadcast, frozen-slice" in out
    code, out, _ = run_main("check", RAW, "--json", *skip)
    assert code == 5 and json.loads(out)["skipped"] == ["where-broadcast", "frozen-slice"]
    assert json.loads(run_main("check", RAW, "--json")[1])["skipped"] == []
    code, out, _ = run_main("check", RAW, "--skip", "frozen-slice")  # what ran found something: that is 1
    assert code == 1 and "not run (skipped): frozen-slice" in out
    written = tmp_path / "out.onnx"
    code, out, _ = run_main("repair", RAW, "-o", written, "--json", "--skip", "frozen-batch")
    assert code == 5 and written.exists() and json.loads(out)["skipped"] == ["frozen-batch"]


@pytest.mark.parametrize(
    "args",
    [
        ["check", RAW, "--jsn"],  # a typo
        ["check", RAW, "--js"],  # options are spelled in full
        ["chek", RAW],
        ["check"],
        ["validate", RAW, "--device", "gpu"],
        ["export", "x.pt"],
        ["check", RAW, "--skip", "where-brodcast"],
        ["optimize", RAW, "-o", "o.onnx", "--tolerance", "cosine=1"],
    ],
    ids=lambda args: " ".join(map(str, args)),
)
def test_a_usage_error_is_64_not_unusable_input(args: list) -> None:
    """A gate script with a typo must not read as "every model is damaged" (2)."""
    code, out, err = run_main(*args)
    assert code == 64 and out == "" and len(err.splitlines()) == 1 and ": usage error: " in err, err


def test_the_console_script_exits_64_on_a_usage_error() -> None:
    result = run_cli("check", RAW, "--quik")
    assert result.returncode == 64 and result.stderr.startswith("hubert-fix: usage error: unrecognized arguments")


@pytest.mark.parametrize(
    "args",
    [["check", "--json"], ["optimize", RAW, "--json"], ["check", RAW, "--json", "--skip", "nope"], ["demo", "--json"]],
    ids=lambda args: " ".join(map(str, args)),
)
def test_json_asked_is_json_given(args: list) -> None:
    """After --json, stdout is one JSON object however the command ends (here: usage errors)."""
    code, out, err = run_main(*args)
    assert code == 64 and json.loads(out) == {"error": err.split(": ", 2)[2].strip(), "exit_code": 64}


def test_the_closing_line_counts_the_start_up() -> None:
    """The PASSED/FOUND line's seconds are the process's (imports included), not the command's alone."""
    started = time.monotonic()
    _, terminal = stderr_on_a_terminal("check", RAW)
    wall = time.monotonic() - started
    seconds = float(re.search(r"FOUND \| ([\d.]+)s \| hubert-fix check", terminal).group(1))
    assert 0.7 * wall <= seconds <= wall, (seconds, wall)


@pytest.mark.parametrize(
    ("command", "flag", "rest"),
    [("validate", "--audio", []), ("optimize", "--calibration-audio", ["-o", "fast.onnx"])],
)
def test_speech_files_do_not_swallow_the_model(command: str, flag: str, rest: list[str]) -> None:
    """One file per flag, repeated: ``--audio a.wav good.onnx`` leaves good.onnx to be MODEL."""
    from hubert_fix.cli.parser import build_parser

    args = build_parser().parse_args([command, flag, "a.wav", flag, "b.wav", "good.onnx", *rest])
    files = args.audio if command == "validate" else args.calibration_audio
    assert args.model == Path("good.onnx") and files == [Path("a.wav"), Path("b.wav")]


def test_a_refused_models_report_counts_no_edits(tmp_path: Path) -> None:
    """Repair refuses it: the JSON's "edits" (what repair makes) is 0; "repairable" counts the findings."""
    refused = FIXTURES / "hubert_base_tiny.dynamo_batch1/model.onnx"
    for args in (["check", refused, "--json"], ["repair", refused, "-o", tmp_path / "out.onnx", "--json"]):
        code, out, _ = run_main(*args)
        data = json.loads(out)
        assert code == 3 and data["edits"] == 0 and data["repairable"] == 2 and data["unrepairable"] == 1, args


def test_optimize_on_an_unrepaired_model_says_repair_it_first(tmp_path: Path) -> None:
    code, out, err = run_main("optimize", RAW, "-o", tmp_path / "fast.onnx")
    assert code == 3 and out.startswith("needs repair first; check finds:\n") and "not repaired" not in out
    assert f"hubert-fix repair {RAW} -o REPAIRED.onnx" in err


@pytest.mark.parametrize(
    ("args", "code", "line"),
    [
        (["check", RAW], 141, ""),
        (["check", RAW, "--json"], 141, ""),
        (["check", "--json"], 64, "hubert-fix check: usage error: the following arguments are required: MODEL.onnx"),
    ],
)
def test_a_reader_that_goes_away(args: list, code: int, line: str) -> None:
    """``hubert-fix check M | head -0``: stdout closed before the report: 141 and nothing on stderr (not exit 4);
    an error's answer keeps its code and its line."""
    process = subprocess.Popen([SCRIPT, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    process.stdout.close()
    err = process.stderr.read()
    assert process.wait(timeout=120) == code and err.startswith(line) and len(err.splitlines()) == bool(line), err
