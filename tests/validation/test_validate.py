"""validate: the cases a model admits, reference files, and the reports it writes (text, JSON, JUnit)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from conftest import CASES, FIXTURES, RAW, run_main


def test_quick_leaves_out_the_10_s_case_of_a_reference_file_too() -> None:
    code, out, _ = run_main("validate", RAW, "--reference", CASES, "--quick", "--json")
    assert max(c["samples"] for c in json.loads(out)["cases"]) < 160000
    code, out, _ = run_main("validate", RAW, "--reference", CASES, "--json")
    assert max(c["samples"] for c in json.loads(out)["cases"]) == 160000


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


def test_a_model_given_as_the_reference_is_named_as_such(tmp_path: Path) -> None:
    code, _, err = run_main("validate", RAW, "--reference", RAW, "--quick")
    assert code == 2 and "not a reference file written by hubert-fix" in err and "allow_pickle" not in err


def test_the_silent_case_is_never_shown_as_passed_without_a_reference() -> None:
    code, out, _ = run_main("validate", FIXTURES / "hf_hubert.onnx", "--quick", "--json")
    statuses = {c["name"]: c["status"] for c in json.loads(out)["cases"]}
    assert statuses["frames == C (32), batch 1 padded"] == "RAN"
    assert np.all([s in ("PASS", "RAN") for s in statuses.values()])
