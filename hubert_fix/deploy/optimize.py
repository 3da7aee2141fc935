"""``optimize``: a faster model for deployment, validated against the model it came from.

The input must be clean (``check`` finds nothing: repair first). Every precision gets
the fp32 rewrite that measured faster (``conv_rewrites.conv_as_2d``); then ``int8``
runs the feature extractor's wide convolutions on int8 rows (``conv_int8``; rebuilt
without them if they miss the tolerance), quantizes MatMuls and stores the positional
conv's weights in int8 (``quantize``), ``fp16`` converts the audio's path to float16 with
normalizations kept in float32 (``half``). What ONNX Runtime fuses by itself at session
creation (GELU, skip + LayerNorm, the DynamicQuantizeMatMul kernel) is left to it: the
file stays standard ONNX and portable between ORT versions and execution providers.
``runtime="openvino"`` writes OpenVINO IR instead (``openvino_ir``: float in the
fastest precision of this CPU, or int8 calibrated on speech), validated the same way
on OpenVINO's CPU plugin.

Nothing is written before the candidate passes validation: the input model's outputs
on CPU over the matrix its interface admits are the reference (and fairseq's, with a
checkpoint), compared with the precision's tolerance (``validation.report.OPTIMIZED_TOLERANCES``), plus the static
check and batch consistency. Inputs, outputs, their element types and dims are kept
(proven before validation). What was done is recorded in the metadata
(``hubert_fix.optimize``).
"""

from __future__ import annotations

import ctypes
import dataclasses
import gc
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

from hubert_fix import metadata, runner
from hubert_fix.analysis.interface import Interface, describe
from hubert_fix.deploy import openvino_ir
from hubert_fix.deploy.conv_int8 import conv_int8, measure_silence
from hubert_fix.deploy.conv_rewrites import conv_as_2d
from hubert_fix.deploy.half import to_half
from hubert_fix.deploy.names import Names
from hubert_fix.deploy.quantize import quantize
from hubert_fix.errors import DeviceUnavailableError, UnrepairableError, UnusableInputError, UsageError, argument
from hubert_fix.onnxio.openvino import HINTS, require_openvino
from hubert_fix.onnxio.outputs import check_model_output, check_output_path, data_path, read_files
from hubert_fix.onnxio.reading import ModelFile, load_model
from hubert_fix.onnxio.runtimes import ONNXRUNTIME, OPENVINO, known
from hubert_fix.onnxio.session import ORT_ERRORS, create_session, ort_message
from hubert_fix.onnxio.weights import Weights
from hubert_fix.onnxio.writing import save_model
from hubert_fix.validation.audio import audio_cases
from hubert_fix.validation.cases import plan_cases
from hubert_fix.validation.report import OPTIMIZED_TOLERANCES, Expected, Reference, Stored, Tolerance, ValidationReport
from hubert_fix.validation.run import validate

PRECISIONS = ("fp32", "int8", "fp16")


@dataclass
class Step:
    name: str
    count: int
    what: str


@dataclass
class OptimizeReport:
    model: str
    output: str
    precision: str
    runtime: str = ONNXRUNTIME
    openvino_config: dict[str, str] | None = None  # what compile_model must be given to compute as validated
    dropped: list[str] = field(default_factory=list)  # steps tried and left out, with the failure that did it
    steps: list[Step] = field(default_factory=list)
    validation: ValidationReport | None = None
    checkpoint_validation: ValidationReport | None = None
    input_bytes: int = 0
    output_bytes: int | None = None  # None: not written
    rewrite_seconds: float = 0.0
    validate_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        checks = [self.validation, self.checkpoint_validation]
        return all(v is None or v.ok for v in checks) and self.validation is not None

    def to_dict(self) -> dict[str, object]:
        data = dataclasses.asdict(self)
        data["validation"] = self.validation.to_dict() if self.validation else None
        data["checkpoint_validation"] = self.checkpoint_validation.to_dict() if self.checkpoint_validation else None
        data["ok"] = self.ok
        return data


def optimize(
    path: Path,
    out: Path,
    *,
    precision: str | None = None,
    runtime: str = ONNXRUNTIME,
    calibration_audio: Sequence[Path] = (),
    tolerance: Tolerance | None = None,
    device: str = "auto",
    quick: bool = False,
    checkpoint_reference: Callable[[ModelFile, Interface], Reference] | None = None,
    progress: Callable[[str], None] | None = None,
    reads: Sequence[Path] = (),
) -> OptimizeReport:
    """Optimize ``path`` for ``precision`` on ``runtime`` and write ``out`` if it validates (see the module doc).

    ``precision`` None: fp32 for ONNX Runtime, the fastest float precision of this CPU for
    OpenVINO (``openvino_ir``; OUT is then an ``.xml`` with its ``.bin`` beside it).
    ``calibration_audio``: speech files, cases of the validation for every precision and
    the calibration of OpenVINO's static int8 (which needs them).
    ``checkpoint_reference`` builds a PyTorch reference for the loaded model and its
    interface (the caller loads the checkpoint; ``reads``: its files, which OUT may not be). Raises UnrepairableError (exit 3) for a model that
    needs repair first, UnusableInputError (exit 2) for unusable input; a candidate
    that misses its tolerance is not written and the report says why (``ok`` False).
    """
    precision = _target(precision, runtime, out, device, calibration_audio)
    say = progress or (lambda message: None)
    outputs = [out, out.with_suffix(".bin")] if runtime == OPENVINO else [out]
    for target in outputs:
        check_output_path(target, reads=[path, *reads, *calibration_audio])  # before any work
    loaded = load_model(path)
    if runtime == OPENVINO:
        for target in outputs:
            check_output_path(target, reads=read_files(loaded, files=[*reads, *calibration_audio]))
    else:
        check_model_output(loaded, out, read_files(loaded, files=[*reads, *calibration_audio]))
    name = str(path)
    _refuse_unfit(loaded, name, precision)
    face = describe(loaded.proto, name)
    report = OptimizeReport(name, str(out), precision, runtime=runtime, input_bytes=_size(loaded))
    tol = tolerance or OPTIMIZED_TOLERANCES[precision]
    audio = audio_cases(calibration_audio, rate=face.sample_rate) if calibration_audio else []

    say("running the input model over the matrix (the reference)")
    started = time.perf_counter()
    stored = _reference_outputs(loaded, face, quick=quick, name=name, audio=audio)
    report.validate_seconds = time.perf_counter() - started
    if runtime == OPENVINO:
        return _for_openvino(
            loaded, report, stored, face, tol, checkpoint_reference, audio=audio, quick=quick, progress=progress
        )

    candidate = _rewritten(loaded, report, face, rows=precision == "int8")
    on = "cpu" if precision == "int8" else device  # int8 weights are for CPU
    _validate(candidate, report, stored, face, tol, checkpoint_reference, quick=quick, progress=progress, device=on)
    if not report.ok and any(step.name == "int8-conv-rows" and step.count for step in report.steps):
        missed = _first_failure(report)
        say(f"int8 convolutions missed the tolerance ({missed}): again with them in float")
        report.dropped.append(f"int8-conv-rows: {missed}")
        report.checkpoint_validation = None
        candidate = _rewritten(load_model(path), report, face, rows=False)
        _validate(candidate, report, stored, face, tol, checkpoint_reference, quick=quick, progress=progress, device=on)
    if not report.ok:
        return report
    # a re-optimized output keeps this run's record
    metadata.set_record(candidate.proto, metadata.OPTIMIZE, _record(report, tol))
    metadata.set_metadata(candidate.proto, {metadata.PRECISION: report.precision})
    save_model(candidate, out)
    report.output_bytes = out.stat().st_size + (data_path(out).stat().st_size if candidate.external_data else 0)
    return report


def _rewritten(loaded: ModelFile, report: OptimizeReport, face: Interface, *, rows: bool) -> ModelFile:
    """``loaded`` rewritten in place for the report's precision (``rows``: int8 convolutions too); its steps."""
    precision, name = report.precision, report.model
    started = time.perf_counter()
    silence = measure_silence(loaded, face, name) if rows else {}  # before any rewrite changes the graph
    weights = Weights(loaded)
    names = Names(loaded.proto.graph)
    report.steps = []
    if rows:
        what = "feature-extractor convolutions as int8 MatMuls over im2col rows, one scale per row"
        report.steps.append(Step("int8-conv-rows", len(conv_int8(weights, names, silence)), what))
    report.steps.append(
        Step("conv-as-2d", len(conv_as_2d(weights, names)), "1-D convolutions run as 2-D (NCHWc on CPU)")
    )
    if precision == "int8":
        matmuls, convs = quantize(weights, names)
        report.steps.append(Step("int8-matmul", len(matmuls), "MatMuls on int8 weights and activations"))
        report.steps.append(Step("int8-conv-weights", len(convs), "Conv weights stored in int8, computed in float32"))
    elif precision == "fp16":
        report.steps.append(Step("fp16", to_half(weights, names), "ops now in float16"))
    weights.drop_unused()
    # rewritten in place: the untouched weights are still read from the input's files
    _same_interface(describe(loaded.proto, name), face, name)
    report.rewrite_seconds = round(report.rewrite_seconds + time.perf_counter() - started, 3)
    return loaded


def _first_failure(report: OptimizeReport) -> str:
    return next((f"{c.name}: {c.failures[0]}" for c in report.validation.cases if c.failures), "no case failed")


def _target(precision: str | None, runtime: str, out: Path, device: str, audio: Sequence[Path]) -> str:
    """The precision to write (refusing a contradictory request, exit 64, and what this CPU cannot do, exit 2)."""
    if runtime == ONNXRUNTIME:
        if precision == "bf16":
            raise UsageError(
                f"{argument('precision', 'bf16')}: ONNX Runtime has no bfloat16 kernels on x86 CPUs; "
                f"bf16 is for {argument('runtime', OPENVINO)}"
            )
        if precision not in (None, *PRECISIONS):
            raise UsageError(f"{argument('precision', precision)}: unknown precision (one of {', '.join(PRECISIONS)})")
        return precision or "fp32"
    known(runtime)
    if precision == "fp16":
        raise UsageError(
            f"{argument('precision', 'fp16')}: OpenVINO's CPU plugin computes in bf16 or fp32; fp16 is for "
            f"{argument('runtime', ONNXRUNTIME)} on GPUs"
        )
    if device == "cuda":
        raise DeviceUnavailableError(f"{argument('runtime', OPENVINO)} targets OpenVINO's CPU plugin, not CUDA")
    if out.suffix != ".xml":
        raise UnusableInputError(f"{out}: an OpenVINO model is written as OUT.xml (its weights in OUT.bin beside it)")
    chosen = openvino_ir.choose(precision)
    if chosen == "int8" and not audio:
        raise UsageError(
            f"{argument('precision', 'int8')} on OpenVINO is static quantization: give speech to calibrate it on, "
            f"{argument('calibration_audio')} (a few files of the kind the model will hear)"
        )
    return chosen


def _for_openvino(
    loaded: ModelFile,
    report: OptimizeReport,
    stored: Stored,
    face: Interface,
    tol: Tolerance,
    checkpoint_reference: Callable[[ModelFile, Interface], Reference] | None,
    *,
    audio: Stored,
    quick: bool,
    progress: Callable[[str], None] | None,
) -> OptimizeReport:
    """Convert (and quantize) to IR in a private folder, validate that file, then move it to OUT."""
    say = progress or (lambda message: None)
    out, name = Path(report.output), report.model
    folder = openvino_ir.staging(out)
    try:
        staged = folder / "model.xml"
        speech = {entry[0] for entry in audio}
        calibration = [face.feeds(source, mask) for case, source, mask, _ in stored if case in speech]
        calibration = calibration[: openvino_ir.MAX_CALIBRATION] if report.precision == "int8" else []
        say(f"converting to OpenVINO IR ({report.precision})")
        started = time.perf_counter()
        quantized = openvino_ir.convert(loaded.source, staged, calibration=calibration, name=name)
        report.steps.append(Step("openvino-ir", 1, "converted by OpenVINO's ONNX front end, weights in fp32"))
        if calibration:
            report.steps.append(
                Step("int8-static", quantized, f"FakeQuantize ops calibrated on {len(calibration)} audio segment(s)")
            )
        report.rewrite_seconds = round(time.perf_counter() - started, 3)
        hint = "fp32" if report.precision == "fp32" else None  # else the plugin's choice: what a plain compile gets
        if hint:  # the plugin would choose bf16 on a CPU with it: the user must ask for fp32 too
            report.openvino_config = {"INFERENCE_PRECISION_HINT": HINTS[hint]}
        _validate(
            loaded,
            report,
            stored,
            face,
            tol,
            checkpoint_reference,
            quick=quick,
            progress=progress,
            saved=staged,
            hint=hint,
        )
        if not report.ok:
            return report
        final = folder / "final.xml"
        openvino_ir.annotate(staged, final, _record(report, tol), name)
        openvino_ir.commit(final, out)
        report.output_bytes = out.stat().st_size + out.with_suffix(".bin").stat().st_size
        return report
    finally:
        openvino_ir.discard(folder)


def _validate(
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


def _refuse_unfit(loaded: ModelFile, name: str, precision: str) -> None:
    """A model to repair first (exit 3), or one already reduced to another precision (exit 2)."""
    meta = metadata.read(loaded.proto)
    earlier = meta.get(metadata.OPTIMIZE)
    if earlier is not None:
        try:
            done = json.loads(earlier).get("precision")
        except (ValueError, AttributeError):
            done = "unknown"
        if done not in ("fp32", precision):
            raise UnusableInputError(
                f"{name}: already optimized for {done}; optimize the fp32 model it came from for {precision}"
            )
    if precision == "int8" and meta.get(metadata.PRECISION) == "fp16":
        raise UnusableInputError(
            f"{name}: an fp16 export; int8 weights are made from an fp32 model (export without {argument('fp16', True)})"
        )
    found = runner.check(loaded.proto, name)
    if found.edits or found.blocking:
        raise UnrepairableError(
            f"{name}: has {len(found.edits)} problem(s) to repair and {found.blocking} unrepairable one(s); "
            f"optimize validates against this model, so repair it first: hubert-fix repair {name} -o REPAIRED.onnx",
            report=found,
        )


def _reference_outputs(loaded: ModelFile, face: Interface, *, quick: bool, name: str, audio: Stored) -> Stored:
    """The input model's first output on CPU for every case of the matrix it admits, then for ``audio``'s."""
    entries, _ = plan_cases(face, quick=quick, stored=None, audio=audio)
    session = create_session(str(loaded.source), name, device="cpu")
    stored: Stored = []
    for case, source, mask, _ in entries:
        try:
            output = session.run(None, face.feeds(source, mask))[0]
        except ORT_ERRORS as exc:
            raise UnusableInputError(
                f"{name}: the input model fails on {case.name}: {ort_message(exc)}; run hubert-fix validate {name}"
            ) from None
        # a copy: ORT's array keeps the session's buffers alive through the candidate's validation
        stored.append((case, source, mask, np.array(output, dtype=np.float32)))
    del session
    _release_memory()  # the reference's weights and buffers leave before the candidate's arrive
    return stored


def _release_memory() -> None:
    """Collect, and hand freed heap pages back to the OS (glibc keeps them otherwise)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the pages are reused by the process instead
        pass


def _same_interface(now: Interface, before: Interface, name: str) -> None:
    """Inputs and outputs keep their names, element types and dims (a bug guard: never expected)."""
    if (now.audio, now.mask, now.outputs) != (before.audio, before.mask, before.outputs):
        raise UnrepairableError(
            f"{name}: the optimized graph's inputs or outputs differ from the model's; nothing written"
        )


def _record(report: OptimizeReport, tol: Tolerance) -> dict[str, object]:
    """What was done and how it was validated (stored in the written model)."""
    compared = [c for c in report.validation.cases if c.kind == "case" and c.compared]
    runtime = {OPENVINO: _openvino_version()} if report.runtime == OPENVINO else {ONNXRUNTIME: ort.__version__}
    return {
        **metadata.stamp(),
        **runtime,
        "precision": report.precision,
        **({"compile_config": report.openvino_config} if report.openvino_config else {}),
        "steps": [dataclasses.asdict(step) for step in report.steps],
        **({"dropped": report.dropped} if report.dropped else {}),
        "tolerance": dataclasses.asdict(tol),
        "validated": {
            "cases": len(compared),
            "against": "checkpoint and input model" if report.checkpoint_validation else "input model",
            "on": report.validation.provider,
            "worst_max_abs_diff": max((c.max_abs_diff or 0.0) for c in compared) if compared else None,
            "worst_min_frame_cosine": min(
                (c.min_frame_cosine for c in compared if c.min_frame_cosine is not None), default=None
            ),
        },
    }


def _openvino_version() -> str:
    return str(require_openvino().get_version())


def _size(model: ModelFile) -> int:
    """Bytes of the model file and the data files it references."""
    files = {model.source, *(span.file for span in model.spans().values())} - {None}
    return sum(f.stat().st_size for f in files)
