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

import io
import logging
import time
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from hubert_fix.errors import DeviceUnavailableError, UnusableInputError
from hubert_fix.interface import Interface, describe
from hubert_fix.matrix import (
    SAMPLE_RATE,
    Case,
    cases,
    frames,
    static_cases,
    unpadded_batches,
)
from hubert_fix.model_io import one_line
from hubert_fix.session import ORT_ERRORS, create_session, ort_message

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Tolerance:
    """What parity means: every bound that is set must hold on every compared case.

    ``max_abs_diff`` is absolute; ``max_rel_diff`` is the max abs diff over the
    reference's largest magnitude (for reduced precisions, whose error scales with the
    output). The cosines: ``min_cosine`` over the whole output; per frame (each real
    frame's C-vector, frames the reference zeroes as padding left out) the mean over a
    case must reach ``min_mean_frame_cosine`` and every frame ``min_frame_cosine``.

    CTC logits: the greedy path (argmax per real frame) must be the reference's on every
    frame whose reference top-1/top-2 gap exceeds ``greedy_margin``; a gap within it is
    within the precision's own error and may flip. By default the margin is twice the
    diff bound (``max_abs_diff``, or ``max_rel_diff`` x the reference's max |value|): no
    logit may move further than that, so no clearer frame can flip. The greedy
    transcripts' token error rate (repeats merged, blanks dropped) is always reported and,
    with ``max_token_error_rate``, bounded.
    """

    max_abs_diff: float | None = None
    max_rel_diff: float | None = None
    min_cosine: float = 0.0
    min_mean_frame_cosine: float | None = None
    min_frame_cosine: float | None = None
    greedy_margin: float | None = None  # CTC: frames whose reference top-1/top-2 gap is at most this may change argmax
    max_token_error_rate: float | None = None  # CTC: greedy transcripts vs the reference's (edit distance / tokens)

    def describe(self) -> str:
        parts = [f"max abs diff <= {self.max_abs_diff:g}"] if self.max_abs_diff is not None else []
        if self.max_rel_diff is not None:
            parts.append(f"max abs diff <= {self.max_rel_diff:g} x the reference's max |value|")
        parts.append(f"cosine >= {self.min_cosine}")
        if self.min_mean_frame_cosine is not None:
            parts.append(f"mean frame cosine >= {self.min_mean_frame_cosine}")
        if self.min_frame_cosine is not None:
            parts.append(f"min frame cosine >= {self.min_frame_cosine}")
        if self.greedy_margin is not None:
            parts.append(f"CTC greedy path kept where the top-1/top-2 gap > {self.greedy_margin:g}")
        if self.max_token_error_rate is not None:
            parts.append(f"CTC token error rate <= {self.max_token_error_rate:g}")
        return ", ".join(parts)

    def margin(self, scale: float) -> float:
        """The CTC greedy margin (see the class doc) against a reference of max magnitude ``scale``:
        twice the tightest diff bound that ``diff_failure`` applies (0 without one)."""
        if self.greedy_margin is not None:
            return self.greedy_margin
        bounds = [b for b in (self.max_abs_diff, None if self.max_rel_diff is None else self.max_rel_diff * scale) if b is not None]
        return 2 * min(bounds, default=0.0)

    def diff_failure(self, diff: float, scale: float) -> str | None:
        """Why ``diff`` (a max abs diff, against a reference of max magnitude ``scale``) is too large."""
        if self.max_abs_diff is not None and not diff <= self.max_abs_diff:
            return f"max abs diff {diff:.3g} > {self.max_abs_diff:g}"
        if self.max_rel_diff is not None and not diff <= self.max_rel_diff * scale:
            return f"max abs diff {diff:.3g} > {self.max_rel_diff:g} x {scale:.3g} (the reference's max |value|)"
        return None


# Parity with PyTorch (or stored outputs), per precision the model computes in.
TOLERANCES = {
    "fp32": Tolerance(max_abs_diff=1e-3, min_cosine=0.9999),
    "fp16": Tolerance(max_abs_diff=5e-2, min_cosine=0.999),
    # 8-bit weights and activations: errors of about 1% of the output's range per value
    "int8": Tolerance(max_rel_diff=0.1, min_cosine=0.999, min_mean_frame_cosine=0.999, min_frame_cosine=0.99),
}

Reference = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (source, padding_mask) -> features
Stored = list[tuple[Case, np.ndarray, np.ndarray, np.ndarray | None]]

NEEDS_REFERENCE = (
    "parity with PyTorch needs a reference (--checkpoint CKPT or --reference CASES.npz); without one a "
    "case only shows that the model runs, has the right shape and finite values. The padded frames == C "
    "case is the one a misaligned Where corrupts silently: only a reference can tell"
)


@dataclass
class CaseResult:
    name: str
    batch: int
    samples: int
    ok: bool
    failures: list[str] = field(default_factory=list)
    shape: list[int] | None = None
    expected_shape: list[int | None] | None = None
    max_abs_diff: float | None = None
    cosine: float | None = None
    mean_frame_cosine: float | None = None
    min_frame_cosine: float | None = None
    greedy_path_identical: bool | None = None  # CTC logits: argmax per clear real frame, as the reference's
    greedy_unclear_frames: int | None = None  # CTC: real frames within the margin (not required to keep their argmax)
    greedy_token_error_rate: float | None = None  # CTC: edit distance of the greedy transcripts / reference tokens
    seconds: float = 0.0
    compared: bool = False  # parity with a reference was checked (or the check needs none)
    kind: str = "case"  # "case" (an input of the matrix or a stored one), or the name of a whole-model check

    @property
    def status(self) -> str:
        """PASS (checked in full), RAN (ran, nothing to compare with) or FAIL."""
        return "FAIL" if not self.ok else "PASS" if self.compared else "RAN"


@dataclass
class ValidationReport:
    model: str
    provider: str
    precision: str
    reference: str  # "none", "checkpoint", "stored", "model" (another ONNX model's outputs)
    tolerance: dict[str, float | None] | None
    cases: list[CaseResult] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # cases the model's interface rules out
    interface: dict[str, object] | None = None
    not_checked: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.cases) and all(c.ok for c in self.cases)

    def to_dict(self) -> dict[str, object]:
        data = asdict(self)
        for case, result in zip(data["cases"], self.cases):
            case["status"] = result.status
        data["ok"] = self.ok
        return data


def load_reference_cases(path: Path) -> list[tuple[Case, np.ndarray, np.ndarray, np.ndarray]]:
    """Stored cases: ``case{i}.name/.source/.padding_mask/.features`` arrays in an .npz."""
    try:
        data = np.load(path, allow_pickle=False)
        stored = []
        index = 0
        while f"case{index}.source" in data:
            source = data[f"case{index}.source"]
            mask = data[f"case{index}.padding_mask"]
            lengths = tuple(int(n) for n in (~mask).sum(axis=1))
            case = Case(str(data[f"case{index}.name"]), lengths, padded_to=int(mask.shape[1]))
            stored.append((case, source, mask, data[f"case{index}.features"]))
            index += 1
    except OSError as exc:
        raise UnusableInputError(f"{path}: cannot read: {one_line(exc.strerror or exc)}") from None
    except (ValueError, KeyError, EOFError, zipfile.BadZipFile):
        raise UnusableInputError(
            f"{path}: not a reference file written by hubert-fix (an .npz of case0.source, case0.padding_mask, "
            "case0.features, ...); write one with hubert_fix.validation.save_reference_cases, or give --checkpoint"
        ) from None
    if not stored:
        raise UnusableInputError(f"{path}: no cases (expected case0.source, case0.padding_mask, case0.features)")
    return stored


def save_reference_cases(path: Path, stored: Stored) -> None:
    """Write cases in the format ``load_reference_cases`` reads (``--reference CASES.npz``).

    Like ``np.savez_compressed``, but each member gets a fixed timestamp, so the file's
    bytes (and sha256) depend on the data only.
    """
    arrays: dict[str, np.ndarray] = {}
    for index, (case, source, padding_mask, features) in enumerate(stored):
        arrays.update({
            f"case{index}.name": np.array(case.name), f"case{index}.source": source,
            f"case{index}.padding_mask": padding_mask, f"case{index}.features": features,
        })  # fmt: skip
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for key, value in arrays.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.asanyarray(value), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, buffer.getvalue())


def plan_cases(face: Interface, *, quick: bool, stored: Stored | None) -> tuple[Stored, list[str]]:
    """The cases to run (the stored ones, or the matrix) that the interface admits, and the skipped ones."""
    if stored is None:
        if face.samples is not None:  # a fixed length: that length, in every batch the model admits
            if face.batch is not None:
                matrix = static_cases(face.batch, face.samples)
            else:
                samples = face.samples
                matrix = [Case(f"static length {samples}", (samples,)), *unpadded_batches(samples)]
                matrix.append(static_cases(2, samples)[1])  # the same length, padded
        else:
            matrix = cases(face.stack, face.width, full=not quick)
            if face.mask is None:
                matrix += unpadded_batches(SAMPLE_RATE)
            if face.batch not in (None, 1):
                matrix += [Case(f"batch {face.batch}, unpadded, {SAMPLE_RATE} samples", (SAMPLE_RATE,) * face.batch)]
        stored = [(case, *case.inputs(), None) for case in matrix]
    elif quick:
        stored = [entry for entry in stored if entry[0].samples < 10 * SAMPLE_RATE]
    kept, skipped = [], []
    for entry in stored:
        case = entry[0]
        why = face.refusal(case.batch, case.samples, case.padded)
        if why:
            skipped.append(f"{case.name} (batch {case.batch}, {case.samples} samples): {why}")
        else:
            kept.append(entry)
    return kept, skipped


def validate(
    model: onnx.ModelProto,
    name: str,
    *,
    device: str = "auto",
    reference: Reference | None = None,
    stored: Stored | None = None,
    quick: bool = False,
    progress: Callable[[str], None] | None = None,
    path: Path | None = None,
    findings: list[str] | None = None,
    roles: dict[str, str] | None = None,
    face: Interface | None = None,
    tolerance: Tolerance | None = None,
    against: str | None = None,
    weights_folder: Path | None = None,
) -> ValidationReport:
    """Run the cases the model admits (the matrix, or the stored cases) and check every output.

    ``reference`` computes PyTorch features for the same inputs (``--checkpoint``);
    ``stored`` brings inputs with reference outputs (``--reference``). ``path``, the
    file ``model`` was loaded from, is what ONNX Runtime loads (with its weights);
    without it ``model`` must be complete and is serialized. ``findings`` are what the
    static ``check`` would repair (each fails the validation); ``roles`` override the
    input roles (``--input NAME=ROLE``); ``face``, the interface when the caller has
    found it already (``interface.describe``); ``tolerance``, parity bounds other than
    the precision's default; ``against``, the reference kind to report for ``stored``
    outputs that another ONNX model gave ("model"); ``weights_folder``, where the
    weights of a ``model`` with stubs are (it is then serialized without them).
    """
    face = face or describe(model, name, roles)
    kind = "checkpoint" if reference else (against or "stored") if stored else "none"
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
        session = create_session(
            str(path) if path else model.SerializeToString(), name, device=device,
            weights_folder=str(weights_folder) if weights_folder and not path else None,
        )  # fmt: skip
    except (DeviceUnavailableError, UnusableInputError):
        raise
    except ORT_ERRORS as exc:
        failure = f"ONNX Runtime rejects the model: {ort_message(exc)}"
        report.cases.append(CaseResult("session creation", 0, 0, False, [failure], kind="session"))
        return report
    report.provider = session.get_providers()[0]
    entries, report.skipped = plan_cases(face, quick=quick, stored=stored)
    if not entries:
        failure = "no stored case fits the model's interface; validate with --checkpoint, or without a reference"
        report.cases.append(CaseResult("fitting cases", 0, 0, False, [failure]))
    for index, (case, source, mask, expected) in enumerate(entries, 1):
        if progress:
            progress(f"[{index}/{len(entries)}] {case.name}: batch {case.batch}, {case.samples} samples")
        if expected is None and reference is not None:
            expected = reference(source, mask)
        report.cases.append(_run_case(session, face, case, source, mask, expected, tol if kind != "none" else None))
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
        report.not_checked.append(f"outputs {others}: checked to be finite only (shape and parity cover the first output)")
    if face.expected_shape(1, face.samples or SAMPLE_RATE) is None:
        report.not_checked.append(f"output {face.outputs[0].name}: neither [B, frames, C] nor [B, K]; its shape is not checked")
    return report


def _run(session: ort.InferenceSession, feeds: dict[str, np.ndarray], result: CaseResult) -> list[np.ndarray] | None:
    """All outputs, or None with the failure recorded in ``result``."""
    start = time.perf_counter()
    try:
        return session.run(None, feeds)
    except ORT_ERRORS as exc:  # the check that it runs
        result.ok = False
        result.failures.append(f"ONNX Runtime failed: {ort_message(exc)}")
        return None
    finally:
        result.seconds = round(result.seconds + time.perf_counter() - start, 4)


def _run_case(
    session: ort.InferenceSession,
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
    if result.expected_shape is not None and not all(
        e is None or e == d for e, d in zip(result.expected_shape, result.shape)
    ) or result.expected_shape is not None and len(result.expected_shape) != len(result.shape):
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
            result.max_abs_diff = float(np.nanmax(diff)) if diff.size else 0.0
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
    a, b = output.astype(np.float64).reshape(-1, output.shape[-1]), expected.astype(np.float64).reshape(-1, output.shape[-1])
    real = np.linalg.norm(b, axis=1) > 0  # padded frames are zero in the reference: no direction to compare
    if not real.any():
        return
    a, b = a[real], b[real]
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)  # 0 only for a zero frame of ours: cosine 0
    cosines = (a * b).sum(axis=1) / np.maximum(norms, np.finfo(np.float64).tiny)
    result.mean_frame_cosine, result.min_frame_cosine = float(cosines.mean()), float(cosines.min())
    if tol.min_mean_frame_cosine is not None and not result.mean_frame_cosine >= tol.min_mean_frame_cosine:
        result.failures.append(f"mean frame cosine {result.mean_frame_cosine:.6f} < {tol.min_mean_frame_cosine} vs reference")
    if tol.min_frame_cosine is not None and not result.min_frame_cosine >= tol.min_frame_cosine:
        result.failures.append(f"min frame cosine {result.min_frame_cosine:.6f} < {tol.min_frame_cosine} vs reference")


def _batch_consistency(session: ort.InferenceSession, face: Interface, tol: Tolerance) -> CaseResult:
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
            result.failures.append(f"utterance {row}: alone {list(alone[0].shape)}, in the batch {list(together[0].shape)}")
            continue
        diff = float(np.abs(alone[0][0].astype(np.float64) - together[0][row].astype(np.float64)).max(initial=0.0))
        result.max_abs_diff = max(result.max_abs_diff or 0.0, diff)
        too_far = tol.diff_failure(diff, float(np.abs(together[0][row].astype(np.float64)).max(initial=0.0)))
        if too_far:
            result.failures.append(f"utterance {row}: {too_far} between alone and in the batch")
    result.ok = not result.failures
    return result
