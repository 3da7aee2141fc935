"""Validate a model on ONNX Runtime over the edge-length input matrix.

The cases are the ones the model's interface admits (``hubert_fix.interface``): no
padded batch without a mask input, only the fixed length of a static export. For every
case: the session runs, the first output has the shape the interface implies (frames
from the conv stack) and every output is finite. Without a reference that is all a case
can show: it *ran*, it was not compared. With a reference (a fairseq checkpoint, or
stored reference outputs) the first output must also match PyTorch on the same padded
batch within the tolerances below.

Checks that need no reference, so that a pipeline without a checkpoint still catches a
broken export: the static ``check`` finds nothing to repair (``findings``, given by the
caller), and a dynamic batch gives each utterance of an unpadded batch the features it
gets alone (a batch the trace fixed at 1 fails there).

Parity compares the same padded batch on both sides on purpose: fairseq's default
extractor uses GroupNorm over time, so an utterance alone and inside a padded batch do
not give the same features even in PyTorch.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np

from hubert_fix.analysis.convstack import SAMPLE_RATE, frames
from hubert_fix.analysis.interface import Interface, describe
from hubert_fix.errors import DeviceUnavailableError, UnusableInputError
from hubert_fix.onnxio.reading import ModelFile
from hubert_fix.onnxio.runtimes import ONNXRUNTIME, RUNTIME_ERRORS, Session, failure, open_session
from hubert_fix.validation.cases import plan_cases
from hubert_fix.validation.matrix import Case
from hubert_fix.validation.report import (
    NEEDS_REFERENCE,
    NOTHING,
    TOLERANCES,
    CaseResult,
    Expected,
    Stored,
    Tolerance,
    ValidationReport,
)


def validate(
    model: ModelFile,
    name: str,
    *,
    expected: Expected = NOTHING,
    saved: Path | None = None,
    face: Interface | None = None,
    tolerance: Tolerance | None = None,
    findings: list[str] | None = None,
    device: str = "auto",
    quick: bool = False,
    progress: Callable[[str], None] | None = None,
    runtime: str = ONNXRUNTIME,
    hint: str | None = None,
    audio: Stored = (),
) -> ValidationReport:
    """Run the cases the model admits (the matrix, or ``expected``'s stored cases) and check every output.

    ``runtime`` ("onnxruntime" or "openvino") loads ``saved``, a file that holds ``model``
    as it is now (with its weights), or else (ONNX Runtime only) ``model`` serialized, its
    weights read from beside ``model.source``. OpenVINO runs in the precision it chooses
    on this CPU, with that precision's tolerance, or in ``hint`` ("fp32", "bf16").
    ``audio``: cases from audio files (``validation.audio``), run after the others.
    ``face``: the interface when the caller has found it already (``interface.describe``);
    ``tolerance``: bounds other than the precision's default; ``findings``: what the
    static ``check`` would repair (each fails the validation).
    """
    face = face or describe(model.proto, name)
    kind = expected.kind
    tol = tolerance or TOLERANCES.get(face.precision, TOLERANCES["fp32"])
    report = ValidationReport(
        name, "none", face.precision, kind, asdict(tol) if kind != "none" else None, interface=face.to_dict()
    )
    if findings is not None:
        check = CaseResult(
            "static check (hubert-fix check)", 0, 0, not findings, list(findings), compared=True, kind="static check"
        )
        report.cases.append(check)
    try:
        session = open_session(model, name, saved=saved, device=device, runtime=runtime, hint=hint)
    except (DeviceUnavailableError, UnusableInputError):
        raise
    except RUNTIME_ERRORS as exc:
        runtime_name, _, why = failure(exc).partition(": ")
        rejected = f"{runtime_name} rejects the model: {why}"
        report.cases.append(CaseResult("session creation", 0, 0, False, [rejected], kind="session"))
        return report
    computes = getattr(session, "inference_precision", face.precision)
    if computes != face.precision and face.precision == "fp32":  # OpenVINO chose a lower precision
        report.precision, tol = computes, tolerance or TOLERANCES[computes]
        report.tolerance = asdict(tol) if kind != "none" else None
    report.provider = session.get_providers()[0]
    entries, report.skipped = plan_cases(face, quick=quick, stored=expected.cases, audio=audio)
    if not entries:
        missing = "no stored case fits the model's interface; validate with a checkpoint, or without a reference"
        report.cases.append(CaseResult("fitting cases", 0, 0, False, [missing]))
    for index, (case, source, mask, outputs) in enumerate(entries, 1):
        if progress:
            progress(f"[{index}/{len(entries)}] {case.name}: batch {case.batch}, {case.samples} samples")
        if outputs is None and expected.compute is not None:
            outputs = expected.compute(source, mask)
        report.cases.append(_run_case(session, face, case, source, mask, outputs, tol if kind != "none" else None))
    if face.batch is None:
        report.cases.append(_batch_consistency(session, face, tol))
    if kind == "none":
        report.not_checked.append(NEEDS_REFERENCE)
    compared = [c for c in report.cases if c.kind == "case" and c.cosine is not None]
    if len(compared) >= 3 and not any(c.ok for c in compared):  # a broken export still gets some right
        report.not_checked.append(
            f"every case differs from the reference (best cosine {max(c.cosine for c in compared):.3f}): "
            f"is the {'checkpoint' if kind == 'checkpoint' else 'reference file'} the one this model was exported from?"
        )
    if len(face.outputs) > 1:
        others = ", ".join(port.name for port in face.outputs[1:])
        report.not_checked.append(
            f"outputs {others}: checked to be finite only (shape and parity cover the first output)"
        )
    if face.expected_shape(1, face.samples or SAMPLE_RATE) is None:
        report.not_checked.append(
            f"output {face.outputs[0].name}: neither [B, frames, C] nor [B, K]; its shape is not checked"
        )
    return report


def _run(session: Session, feeds: dict[str, np.ndarray], result: CaseResult) -> list[np.ndarray] | None:
    """All outputs, or None with the failure recorded in ``result``."""
    start = time.perf_counter()
    try:
        return session.run(None, feeds)
    except RUNTIME_ERRORS as exc:  # the check that it runs
        result.ok = False
        runtime_name, _, why = failure(exc).partition(": ")
        result.failures.append(f"{runtime_name} failed: {why}")
        return None
    finally:
        result.seconds = round(result.seconds + time.perf_counter() - start, 4)


def _run_case(
    session: Session,
    face: Interface,
    case: Case,
    source: np.ndarray,
    mask: np.ndarray,
    expected: np.ndarray | None,
    tol: Tolerance | None,
) -> CaseResult:
    result = CaseResult(case.name, case.batch, case.samples, ok=True)
    outputs = _run(session, face.feeds(source, mask), result)
    if outputs is None:
        return result
    output = outputs[0]
    result.shape = list(output.shape)
    result.expected_shape = face.expected_shape(case.batch, case.samples)
    if (
        result.expected_shape is not None
        and not all(e is None or e == d for e, d in zip(result.expected_shape, result.shape))
        or result.expected_shape is not None
        and len(result.expected_shape) != len(result.shape)
    ):
        result.failures.append(f"output shape {result.shape}, expected {result.expected_shape}")
    for index, (port, value) in enumerate(zip(face.outputs, outputs)):
        if value.dtype.kind != "f":
            continue
        # CTC logits: fairseq masks padded frames with -inf (blank 0); -inf is a value there.
        # A user's own CTC export has no metadata of ours: its masked frames say it.
        logits = index == 0 and (face.ctc or _masked_logit_frames(value))
        bad = np.isnan(value) | np.isposinf(value) if logits else ~np.isfinite(value)
        if bad.any():
            result.failures.append(f"{int(bad.sum())} NaN/Inf value(s) in output {port.name}")
    output = output.astype(np.float32)
    if expected is not None and tol is not None and output.shape == expected.shape:
        if face.ctc:
            output, expected = _ctc_compared(result, face, case, output, expected, tol)
        with np.errstate(all="ignore"):  # inf or NaN in either side: the figures say so, no warning
            diff = np.abs(output.astype(np.float64) - expected.astype(np.float64))
            result.max_abs_diff = (
                float(np.nanmax(diff))
                if diff.size and not np.isnan(diff).all()
                else (float("nan") if diff.size else 0.0)
            )  # all NaN: nanmax would warn
            a, b = output.ravel().astype(np.float64), expected.ravel().astype(np.float64)
            denom = float(np.linalg.norm(a) * np.linalg.norm(b))
            result.cosine = float(a @ b / denom) if denom else (1.0 if not a.any() and not b.any() else 0.0)
        result.compared = True
        scale = float(np.abs(b).max(initial=0.0))
        too_far = tol.diff_failure(result.max_abs_diff, scale)
        if too_far:
            result.failures.append(f"{too_far} vs reference")
        if not result.cosine >= tol.min_cosine:
            result.failures.append(f"cosine {result.cosine:.6f} < {tol.min_cosine} vs reference")
        if not face.ctc:
            _frame_cosines(result, output, expected, tol)
    elif expected is not None and output.shape != expected.shape:
        result.failures.append(f"reference has shape {list(expected.shape)}, output {result.shape}")
    result.ok = not result.failures
    return result


def _masked_logit_frames(value: np.ndarray) -> bool:
    """Frames of a [B, frames, V] output that are -inf for every symbol but one (fairseq's
    ``get_logits`` over padding: all but the blank): CTC logits, whatever the metadata says."""
    if value.ndim != 3 or value.shape[-1] < 2:
        return False
    masked = np.isneginf(value).any(axis=-1)
    return bool(masked.any()) and bool((np.isfinite(value[masked]).sum(axis=-1) == 1).all())


def _ctc_compared(
    result: CaseResult, face: Interface, case: Case, output: np.ndarray, expected: np.ndarray, tol: Tolerance
) -> tuple[np.ndarray, np.ndarray]:
    """CTC logits: the same -inf mask, the same greedy path on every clear real frame; the finite values to compare.

    Real frames per utterance are the conv stack's frame count for its length (fairseq's
    wav2vec 2.0 rule; HuBERT also counts a last partly padded frame, left out here). A
    frame is clear when the reference's top-1/top-2 gap exceeds ``tol.margin``; the
    others are counted, and the greedy transcripts' token error rate is reported.
    """
    if not np.array_equal(np.isneginf(output), np.isneginf(expected)):
        result.failures.append("the -inf (masked) logits differ from the reference's")
    finite = np.isfinite(expected) & np.isfinite(output)
    margin = tol.margin(float(np.abs(expected[np.isfinite(expected)]).max(initial=0.0)))
    result.greedy_path_identical, result.greedy_unclear_frames = True, 0
    errors = tokens = 0
    for row, length in enumerate(case.lengths):
        real = frames(length, face.stack)
        ours, theirs = output[row, :real], expected[row, :real]
        top2 = np.sort(np.where(np.isfinite(theirs), theirs, -np.inf), axis=-1)[:, -2:]
        with np.errstate(invalid="ignore"):
            clear = ~((top2[:, 1] - top2[:, 0]) <= margin)  # a gap of inf - inf (NaN) counts as clear
        path, reference = ours.argmax(-1), theirs.argmax(-1)
        differing = int(((path != reference) & clear).sum())
        result.greedy_unclear_frames += int((~clear).sum())
        if differing:
            result.greedy_path_identical = False
            result.failures.append(
                f"utterance {row}: greedy CTC path differs on {differing} of {int(clear.sum())} clear real frame(s) "
                f"(top-1/top-2 gap > {margin:.3g})"
            )
        said, meant = _transcript(path, face.blank), _transcript(reference, face.blank)
        errors, tokens = errors + _edit_distance(said, meant), tokens + len(meant)
    result.greedy_token_error_rate = errors / tokens if tokens else float(errors > 0)
    if tol.max_token_error_rate is not None and not result.greedy_token_error_rate <= tol.max_token_error_rate:
        result.failures.append(
            f"greedy transcripts: token error rate {result.greedy_token_error_rate:.3f} > {tol.max_token_error_rate:g}"
        )
    return np.where(finite, output, 0.0), np.where(finite, expected, 0.0)


def _transcript(path: np.ndarray, blank: int) -> list[int]:
    """A greedy CTC path as tokens: repeats merged, blanks dropped."""
    merged = [int(t) for i, t in enumerate(path) if i == 0 or t != path[i - 1]]
    return [t for t in merged if t != blank]


def _edit_distance(a: list[int], b: list[int]) -> int:
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        previous, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (x != y))
    return row[-1]


def _frame_cosines(result: CaseResult, output: np.ndarray, expected: np.ndarray, tol: Tolerance) -> None:
    """Per-frame cosines of a [B, frames, C] output, over the frames the reference does not zero."""
    if output.ndim != 3 or not output.size:
        return
    a, b = (
        output.astype(np.float64).reshape(-1, output.shape[-1]),
        expected.astype(np.float64).reshape(-1, output.shape[-1]),
    )
    real = np.linalg.norm(b, axis=1) > 0  # padded frames are zero in the reference: no direction to compare
    if not real.any():
        return
    a, b = a[real], b[real]
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)  # 0 only for a zero frame of ours: cosine 0
    cosines = (a * b).sum(axis=1) / np.maximum(norms, np.finfo(np.float64).tiny)
    result.mean_frame_cosine, result.min_frame_cosine = float(cosines.mean()), float(cosines.min())
    if tol.min_mean_frame_cosine is not None and not result.mean_frame_cosine >= tol.min_mean_frame_cosine:
        result.failures.append(
            f"mean frame cosine {result.mean_frame_cosine:.6f} < {tol.min_mean_frame_cosine} vs reference"
        )
    if tol.min_frame_cosine is not None and not result.min_frame_cosine >= tol.min_frame_cosine:
        result.failures.append(f"min frame cosine {result.min_frame_cosine:.6f} < {tol.min_frame_cosine} vs reference")


def _batch_consistency(session: Session, face: Interface, tol: Tolerance) -> CaseResult:
    """Each utterance of an unpadded batch of 3 gets the features it gets alone.

    Needs no reference: a batch the trace fixed at 1 fails to run or mixes items, and an
    export that broadcasts one item's mask over the others differs here.
    """
    samples = face.samples or SAMPLE_RATE
    case = Case(f"batch consistency: 3 utterances of {samples} samples, together and alone", (samples,) * 3)
    result = CaseResult(case.name, 3, samples, ok=True, compared=True, kind="batch consistency")
    source, mask = case.inputs()
    together = _run(session, face.feeds(source, mask), result)
    if together is None:
        return result
    result.shape = list(together[0].shape)
    for row in range(3):
        alone = _run(session, face.feeds(source[row : row + 1], mask[row : row + 1]), result)
        if alone is None:
            return result
        if alone[0].shape[1:] != together[0].shape[1:]:
            result.failures.append(
                f"utterance {row}: alone {list(alone[0].shape)}, in the batch {list(together[0].shape)}"
            )
            continue
        diff = float(np.abs(alone[0][0].astype(np.float64) - together[0][row].astype(np.float64)).max(initial=0.0))
        result.max_abs_diff = max(result.max_abs_diff or 0.0, diff)
        too_far = tol.diff_failure(diff, float(np.abs(together[0][row].astype(np.float64)).max(initial=0.0)))
        if too_far:
            result.failures.append(f"utterance {row}: {too_far} between alone and in the batch")
    result.ok = not result.failures
    return result
