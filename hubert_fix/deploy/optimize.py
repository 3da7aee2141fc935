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

Nothing is written to OUT before the candidate passes validation. The candidate is
written to a private folder beside OUT and read back with its weights left on disk, so
that what is validated is the file (and the rewrite's weights leave memory before the
validation's session needs it); once it passes, it is written to OUT with its record and
the folder removed. The reference is the input model's outputs on CPU over the matrix
its interface admits (and fairseq's, with a checkpoint), compared with the precision's tolerance (``validation.report.OPTIMIZED_TOLERANCES``), plus the static
check and batch consistency. Inputs, outputs, their element types and dims are kept
(proven before validation). What was done is recorded in the metadata
(``hubert_fix.optimize``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

from hubert_fix import metadata
from hubert_fix.analysis.interface import Interface, describe
from hubert_fix.deploy import openvino_ir
from hubert_fix.deploy.candidate import first_failure, validate_candidate
from hubert_fix.deploy.conv_int8 import conv_int8, measure_silence
from hubert_fix.deploy.conv_rewrites import conv_as_2d
from hubert_fix.deploy.half import to_half
from hubert_fix.deploy.names import Names
from hubert_fix.deploy.quantize import feature_projections, quantize
from hubert_fix.deploy.report import OptimizeReport, Step, record
from hubert_fix.deploy.target import checked_precision, refuse_unfit
from hubert_fix.errors import UnrepairableError
from hubert_fix.onnxio.heap import release_memory
from hubert_fix.onnxio.outputs import check_model_output, check_output_path, data_path, read_files
from hubert_fix.onnxio.reading import ModelFile, load_model
from hubert_fix.onnxio.runtimes import ONNXRUNTIME, OPENVINO
from hubert_fix.onnxio.weights import Weights
from hubert_fix.onnxio.writing import discard, save_model, staging
from hubert_fix.validation.audio import audio_cases
from hubert_fix.validation.own_outputs import reference_outputs
from hubert_fix.validation.report import OPTIMIZED_TOLERANCES, Reference, Tolerance


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
    OpenVINO (``openvino_ir``; OUT is then an ``.xml`` with its ``.bin`` beside it), fp32 there
    where bf16 misses its tolerance (``report.dropped`` says why).
    ``calibration_audio``: speech files, cases of the validation for every precision and
    the calibration of OpenVINO's static int8 (which needs them).
    ``checkpoint_reference`` builds a PyTorch reference for the loaded model and its
    interface (the caller loads the checkpoint; ``reads``: its files, which OUT may not be). Raises UnrepairableError (exit 3) for a model that
    needs repair first, UnusableInputError (exit 2) for unusable input; a candidate
    that misses its tolerance is not written and the report says why (``ok`` False).
    """
    asked = precision
    precision = checked_precision(precision, runtime, out, device, calibration_audio)
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
    refuse_unfit(loaded, name, precision)
    face = describe(loaded.proto, name)
    report = OptimizeReport(name, str(out), precision, runtime=runtime, input_bytes=_size(loaded))
    tol = tolerance or OPTIMIZED_TOLERANCES[precision]
    audio = audio_cases(calibration_audio, rate=face.sample_rate) if calibration_audio else []

    say("running the input model over the matrix (the reference)")
    started = time.perf_counter()
    stored = reference_outputs(loaded, face, quick=quick, name=name, audio=audio)
    report.validate_seconds = time.perf_counter() - started
    if runtime == OPENVINO:
        # the default bf16 falls back to fp32 on a miss; a precision asked for by name does not
        fallback = (tolerance or OPTIMIZED_TOLERANCES["fp32"]) if asked is None and precision == "bf16" else None
        return openvino_ir.for_openvino(
            loaded, report, stored, face, tol, checkpoint_reference, audio=audio, quick=quick, progress=progress,
            fallback=fallback,
        )  # fmt: skip

    on = "cpu" if precision == "int8" else device  # int8 weights are for CPU
    folder = staging(out)
    try:
        staged = folder / out.name
        candidate = _staged(_rewritten(loaded, report, face, rows=precision == "int8"), staged)
        del loaded  # the rewrite's weights leave memory before the candidate's session needs it
        release_memory()
        validate_candidate(
            candidate, report, stored, face, tol, checkpoint_reference, quick=quick, progress=progress, device=on
        )
        if not report.ok and any(step.name == "int8-conv-rows" and step.count for step in report.steps):
            missed = first_failure(report)
            say(f"int8 convolutions missed the tolerance ({missed}): again with them in float")
            report.dropped.append(f"int8-conv-rows: {missed}")
            report.checkpoint_validation = None
            candidate = _staged(_rewritten(load_model(path), report, face, rows=False), staged)
            release_memory()
            validate_candidate(
                candidate, report, stored, face, tol, checkpoint_reference, quick=quick, progress=progress, device=on
            )
        if not report.ok:
            return report
        # a re-optimized output keeps this run's record
        metadata.set_record(candidate.proto, metadata.OPTIMIZE, record(report, tol))
        metadata.set_metadata(candidate.proto, {metadata.PRECISION: report.precision})
        save_model(candidate, out)  # the validated file's weights, copied file to file
    finally:
        discard(folder)
    report.output_bytes = out.stat().st_size + (data_path(out).stat().st_size if candidate.external_data else 0)
    return report


def _staged(candidate: ModelFile, staged: Path) -> ModelFile:
    """``candidate`` written to ``staged`` and read back with its weights left on disk: what is
    validated is what was written, and the rewrite's weights can leave memory."""
    save_model(candidate, staged)
    return load_model(staged)


def _rewritten(loaded: ModelFile, report: OptimizeReport, face: Interface, *, rows: bool) -> ModelFile:
    """``loaded`` rewritten in place for the report's precision (``rows``: int8 convolutions too); its steps."""
    precision, name = report.precision, report.model
    started = time.perf_counter()
    silence = measure_silence(loaded, face, name) if rows else {}  # before any rewrite changes the graph
    kept = feature_projections(loaded.proto.graph, face.audio.name) if precision == "int8" else frozenset()
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
        matmuls, convs = quantize(weights, names, keep=kept)
        report.steps.append(Step("int8-matmul", len(matmuls), "MatMuls on int8 weights and activations"))
        report.steps.append(Step("float-feature-projection", len(kept), "the MatMul reading the conv features, float"))
        report.steps.append(Step("int8-conv-weights", len(convs), "Conv weights stored in int8, computed in float32"))
    elif precision == "fp16":
        report.steps.append(Step("fp16", to_half(weights, names), "ops now in float16"))
    weights.drop_unused()
    # rewritten in place: the untouched weights are still read from the input's files
    _same_interface(describe(loaded.proto, name), face, name)
    report.rewrite_seconds = round(report.rewrite_seconds + time.perf_counter() - started, 3)
    return loaded


def _same_interface(now: Interface, before: Interface, name: str) -> None:
    """Inputs and outputs keep their names, element types and dims (a bug guard: never expected)."""
    if (now.audio, now.mask, now.outputs) != (before.audio, before.mask, before.outputs):
        raise UnrepairableError(
            f"{name}: the optimized graph's inputs or outputs differ from the model's; nothing written"
        )


def _size(model: ModelFile) -> int:
    """Bytes of the model file and the data files it references."""
    files = {model.source, *(span.file for span in model.spans().values())} - {None}
    return sum(f.stat().st_size for f in files)
