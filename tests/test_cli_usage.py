"""How the command line reads and answers: options, help, progress, and the lines it prints."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import onnx
import pytest
from conftest import FIXTURES, RAW, run_cli, run_main, stderr_on_a_terminal


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


def test_contradictory_repair_options_are_refused(tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    shutil.copyfile(RAW, model)
    code, _, err = run_main("repair", model, "--in-place", "-o", tmp_path / "other.onnx")
    assert code == 2 and "give one of them" in err and not (tmp_path / "other.onnx").exists()
    assert run_main("repair", model, "--in-place", "-o", model)[0] == 0  # -o MODEL says the same as --in-place


def test_passes_prints_plain_text() -> None:
    code, out, _ = run_main("passes")
    assert code == 0 and "``" not in out and "'pad = K - T'" in out
