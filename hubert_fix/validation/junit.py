"""A validation report as JUnit XML, for CI systems (``validate --junit-xml``)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from hubert_fix.validation.report import ValidationReport


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
