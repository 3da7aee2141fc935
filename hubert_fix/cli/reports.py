"""Reports for people and for CI systems: the text the CLI prints, and JUnit XML.

Shared by ``cli`` and ``demo`` (which shows the same reports), so neither imports the
other. The JSON form of each report is its ``to_dict()``.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from hubert_fix.runner import Report
from hubert_fix.validation.report import Tolerance, ValidationReport


def format_report(report: Report) -> str:
    lines = []
    verb = "made" if report.applied else "planned"
    for result in report.results:
        for edit in result.edits:
            lines += [
                f"  [{result.name}] {edit.op} {edit.node}",
                f"      problem: {edit.before}",
                f"      edit ({verb}): {edit.action}",
                f"      after:   {edit.after}",
            ]
            if edit.assumption:
                lines.append(f"      assumed: {edit.assumption}")
    declined = [(r.name, d) for r in report.results for d in r.declined]
    if declined:
        lines.append("  declined:")
        for name, d in declined:
            mark = "UNREPAIRABLE" if d.blocking else "ok"
            lines.append(f"    [{name}] {d.op} {d.node}: {mark}: {d.reason}")
    return "\n".join(lines)


def format_validation(report: ValidationReport) -> str:
    ref = {
        "none": "no reference", "checkpoint": "vs fairseq PyTorch", "stored": "vs stored reference",
        "model": "vs the input model on ONNX Runtime",
    }[report.reference]  # fmt: skip
    lines = [f"validate {report.model}: provider {report.provider}, {report.precision}, {ref}"]
    if report.tolerance:
        lines.append(f"  tolerance: {Tolerance(**report.tolerance).describe()}")
    for case in report.cases:
        detail = f"shape {case.shape}" if case.shape else ""
        if case.max_abs_diff is not None:
            detail += f"{', ' if detail else ''}max abs diff {case.max_abs_diff:.2e}"
        if case.cosine is not None:
            detail += f", cosine {case.cosine:.6f}"
        if case.greedy_path_identical is not None:
            detail += f", greedy path {'identical' if case.greedy_path_identical else 'DIFFERS'}"
            if case.greedy_unclear_frames:
                detail += f" on clear frames ({case.greedy_unclear_frames} within the margin)"
            detail += f", token error rate {case.greedy_token_error_rate:.3f}"
        if case.mean_frame_cosine is not None:
            detail += f", frame cosine mean {case.mean_frame_cosine:.6f} min {case.min_frame_cosine:.6f}"
        if case.status == "RAN":
            detail += f"{', ' if detail else ''}not compared"
        size = f" (batch {case.batch}, {case.samples} samples)" if case.batch else ""
        lines.append(f"  {case.status:<4}  {case.name}{size} {detail}".rstrip())
        lines += [f"        {failure}" for failure in case.failures]
    lines += [f"  SKIP  {skipped}" for skipped in report.skipped]
    lines += [f"  note: {text}" for text in report.not_checked]
    tally = {status: sum(c.status == status for c in report.cases) for status in ("PASS", "RAN", "FAIL")}
    summary = ", ".join(f"{n} {word}" for word, n in (("passed", tally["PASS"]), ("ran, not compared", tally["RAN"]),
                                                     ("failed", tally["FAIL"])) if n)  # fmt: skip
    lines.append(f"  {len(report.cases)} checks: {summary}" + (f"; {len(report.skipped)} skipped" if report.skipped else ""))
    return "\n".join(lines)


def junit_xml(report: ValidationReport) -> bytes:
    """One ``<testcase>`` per check; failures carry their figures; ``RAN`` cases are passes
    whose ``system-out`` says that nothing was compared. Written as GitLab, Jenkins and
    GitHub's JUnit readers expect (``testsuites/testsuite/testcase``)."""
    failures = sum(not c.ok for c in report.cases)
    seconds = sum(c.seconds for c in report.cases)
    suites = ET.Element("testsuites", name="hubert-fix validate", tests=str(len(report.cases)), failures=str(failures))
    suite = ET.SubElement(
        suites, "testsuite", name=f"validate {report.model}", tests=str(len(report.cases)), failures=str(failures),
        skipped=str(len(report.skipped)), time=f"{seconds:.3f}",
    )  # fmt: skip
    props = ET.SubElement(suite, "properties")
    for key, value in (("provider", report.provider), ("precision", report.precision), ("reference", report.reference)):
        ET.SubElement(props, "property", name=key, value=value)
    for case in report.cases:
        size = f" (batch {case.batch}, {case.samples} samples)" if case.batch else ""
        element = ET.SubElement(
            suite, "testcase", classname=f"hubert-fix.{case.kind.replace(' ', '_')}", name=f"{case.name}{size}",
            time=f"{case.seconds:.3f}",
        )  # fmt: skip
        figures = []
        if case.max_abs_diff is not None:
            figures.append(f"max abs diff {case.max_abs_diff:.3g}")
        if case.cosine is not None:
            figures.append(f"cosine {case.cosine:.6f}")
        if case.shape is not None:
            figures.append(f"shape {case.shape}")
        if not case.ok:
            failure = ET.SubElement(element, "failure", message="; ".join(case.failures), type="ValidationFailure")
            failure.text = "\n".join([*case.failures, *figures])
        elif case.status == "RAN":
            ET.SubElement(element, "system-out").text = "ran, not compared: no reference; " + ", ".join(figures)
        elif figures:
            ET.SubElement(element, "system-out").text = ", ".join(figures)
    for skipped in report.skipped:
        element = ET.SubElement(suite, "testcase", classname="hubert-fix.case", name=skipped.split(":")[0])
        ET.SubElement(element, "skipped", message=skipped)
    ET.indent(suites)
    return ET.tostring(suites, encoding="utf-8", xml_declaration=True)
