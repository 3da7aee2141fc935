"""A candidate validated against the model it came from (and the checkpoint), as ``optimize`` needs it."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from hubert_fix import runner
from hubert_fix.analysis.interface import Interface
from hubert_fix.deploy.report import OptimizeReport
from hubert_fix.onnxio.reading import ModelFile
from hubert_fix.validation.report import Expected, Reference, Stored, Tolerance
from hubert_fix.validation.run import validate


def validate_candidate(
    candidate: ModelFile,
    report: OptimizeReport,
    stored: Stored,
    face: Interface,
    tol: Tolerance,
    checkpoint_reference: Callable[[ModelFile, Interface], Reference] | None,
    *,
    quick: bool,
    progress: Callable[[str], None] | None,
    device: str = "cpu",
    saved: Path | None = None,
    hint: str | None = None,
) -> None:
    """The candidate against the input model's outputs, then (if that passed) against the checkpoint."""
    say = progress or (lambda message: None)
    say("validating the candidate")
    started = time.perf_counter()
    findings = runner.findings(runner.check(candidate.proto, report.model))
    same = {
        "saved": saved,
        "runtime": report.runtime,
        "hint": hint,
        "tolerance": tol,
        "device": device,
        "progress": progress,
    }
    report.validation = validate(
        candidate, report.output, expected=Expected.stored(stored, kind="model"), findings=findings, face=face, **same
    )
    report.validation.precision = report.precision
    if checkpoint_reference is not None and report.validation.ok:
        say("validating against the checkpoint")
        report.checkpoint_validation = validate(
            candidate, report.output, expected=Expected.pytorch(checkpoint_reference(candidate, face)), quick=quick, face=face, **same
        )  # fmt: skip
        report.checkpoint_validation.precision = report.precision
    report.validate_seconds = round(report.validate_seconds + time.perf_counter() - started, 3)


def first_failure(report: OptimizeReport) -> str:
    return next((f"{c.name}: {c.failures[0]}" for c in report.validation.cases if c.failures), "no case failed")
