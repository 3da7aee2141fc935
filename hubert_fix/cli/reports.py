"""Reports for people: the text the CLI and the demo print.

The JSON form of each report is its ``to_dict()``; the JUnit form of a validation is
``hubert_fix.validation.junit``.
"""

from __future__ import annotations

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
    if report.skipped:
        lines.append(f"  not run (skipped): {', '.join(report.skipped)}")
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
    lines.append(
        f"  {len(report.cases)} checks: {summary}" + (f"; {len(report.skipped)} skipped" if report.skipped else "")
    )
    return "\n".join(lines)
