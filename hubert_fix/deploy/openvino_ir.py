"""``optimize --runtime openvino``: the model as OpenVINO IR (``OUT.xml`` + ``OUT.bin``).

OpenVINO's CPU plugin is the fastest runtime we measured for these models on CPUs with
bfloat16 (it compiles a float model to bf16 by itself there). The IR cannot carry an
inference precision (a hint saved in its ``rt_info`` is ignored by ``compile_model``),
so a float IR is validated in the precision a plain ``compile_model(OUT.xml, "CPU")``
gives on this CPU (``bf16`` where the CPU has BF16, else ``fp32``): the default, and
what the user's own call will compute. ``fp32`` is validated with the hint
``INFERENCE_PRECISION_HINT=f32``, which the user must then pass too (the record says so).
The default falls back to fp32 when bf16 misses its tolerance (as on an Intel Xeon with
AMX for the tiny fixtures): the same IR, validated with the hint, the miss in ``dropped``;
``bf16`` asked for by name is refused on a miss instead.

``int8``: static quantization with NNCF, calibrated on the user's speech
(``--calibration-audio``). Measured on HuBERT base (docs/deployment.md): quantizing the
convolutions or keeping NNCF's SmoothQuant costs accuracy (min frame cosine 0.95 at
10 s; any one extractor conv in int8, 0.44-0.73 on espeak-ng speech), the attention output
projections in int8 put the 1-frame input at cosine 0.994, and the feature projection
in int8 put 10 s of noise at 0.9987, so these stay float; what stays float computes in
the plugin's default precision (bf16 where the CPU has it).

Conversion and quantization run in a forked child (``isolation``): a crash of
OpenVINO's C++ is exit 2, and their memory is returned when the child exits.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hubert_fix.analysis.interface import Interface
from hubert_fix.deploy.candidate import first_failure, validate_candidate
from hubert_fix.deploy.report import OptimizeReport, Step, record
from hubert_fix.errors import MissingExtraError, UnusableInputError, argument, install_hint, one_line
from hubert_fix.onnxio.heap import page_out, release_memory
from hubert_fix.onnxio.isolation import ChildError
from hubert_fix.onnxio.openvino import HINTS, float_precisions, isolated, message, require_openvino
from hubert_fix.onnxio.reading import ModelFile
from hubert_fix.onnxio.writing import discard, process_umask, staging, synced
from hubert_fix.validation.audio import equal_segments
from hubert_fix.validation.report import Reference, Stored, Tolerance

PRECISIONS = ("fp32", "bf16", "int8")
#: NNCF's default calibration subset: more segments are not read.
MAX_CALIBRATION = 300
#: NNCF collects its statistics on a model whose every intermediate tensor is an output, all
#: held at once: about 95 MB per second of audio at HuBERT base. Speech is calibrated on in equal
#: segments of at most this long. 8 espeak-ng sentences of 3-5 s (24 segments), HuBERT base: the
#: quantizing child's peak 1575 -> 1342 MB (before ``_quantize``'s handing back); min frame cosine
#: on the sentences 0.99957 -> 0.99941, on the other cases 0.99956 -> 0.99958.
CALIBRATION_SECONDS = 2


def choose(precision: str | None) -> str:
    """``precision``, or the fastest float precision of this CPU; UnusableInputError if the CPU lacks
    it, MissingExtraError if int8's NNCF is not installed."""
    available = float_precisions()
    if precision is None:
        return available[0]
    if precision not in PRECISIONS:
        raise UnusableInputError(
            f"{argument('precision', precision)}: OpenVINO targets are one of {', '.join(PRECISIONS)}"
        )
    if precision == "int8" and importlib.util.find_spec("nncf") is None:
        raise MissingExtraError(
            f"{argument('precision', 'int8')} for OpenVINO quantizes with NNCF, which is not installed: "
            f"{install_hint('openvino')}"
        )
    if precision == "bf16" and "bf16" not in available:
        raise UnusableInputError(
            f"{argument('precision', 'bf16')}: this CPU has no bfloat16 (OpenVINO's CPU plugin reports none); "
            "leave the precision out: fp32 is the fastest float here"
        )
    return precision


def convert(source: Path, staged: Path, *, calibration: Sequence[dict[str, np.ndarray]], audio: str, name: str) -> int:
    """Write ``source`` (ONNX) as IR to ``staged``, quantized when ``calibration`` is given (``audio``:
    the model's audio input); the number of quantized operations."""
    require_openvino()

    def work() -> bytes:
        return str(_convert(source, staged, calibration, audio)).encode()

    return int(_isolated(work, name, "converting", staged.parent))


def annotate(staged: Path, final: Path, record: dict[str, object], name: str) -> None:
    """``staged`` with our record in its rt_info (``hubert_fix/optimize``), saved as ``final``."""

    def work() -> bytes:
        ov = require_openvino()
        model = ov.Core().read_model(str(staged))
        model.set_rt_info(json.dumps(record, sort_keys=True), ["hubert_fix", "optimize"])
        _save(model, final)
        return b""

    _isolated(work, name, "saving", final.parent)


def commit(staged: Path, out: Path) -> None:
    """Move the staged IR to OUT: the weights first, then the .xml that names them."""
    for suffix in (".bin", ".xml"):
        os.chmod(staged.with_suffix(suffix), 0o666 & ~process_umask())
        os.replace(staged.with_suffix(suffix), out.with_suffix(suffix))


def _convert(source: Path, staged: Path, calibration: Sequence[dict[str, np.ndarray]], audio: str) -> int:
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # NNCF's progress bars: never on our stdout (--json)
    ov = require_openvino()
    model = ov.Core().read_model(str(source))
    quantized = 0
    if calibration:
        # ONNX's weights are read into this process's heap; an IR's are mapped from its file, whose
        # pages can be handed back once the statistics model is compiled (``_quantize``)
        floats = staged.with_name("float.xml")
        _save(model, floats)
        del model
        release_memory()
        model = _quantize(ov.Core().read_model(str(floats)), calibration, floats.with_suffix(".bin"), audio)
        quantized = sum(op.get_type_name() == "FakeQuantize" for op in model.get_ordered_ops())
    _save(model, staged)
    return quantized


def _save(model: Any, xml: Path) -> None:
    """``model`` as IR at ``xml`` (and its .bin), on disk (fsync): before it is renamed to OUT, and
    before it is mapped (a page the kernel has yet to write cannot be handed back: ``heap.page_out``).

    OSError when it cannot be written: OpenVINO's own error says only "iostream error" when the
    disk is full, which must not read as a verdict on the model.
    """
    try:
        require_openvino().save_model(model, str(xml), compress_to_fp16=False)
    except RuntimeError as exc:
        free = shutil.disk_usage(xml.parent).free / 1e6
        raise OSError(f"OpenVINO's save_model failed ({message(exc)}) with {free:.1f} MB free there") from None
    synced(xml, xml.with_suffix(".bin"))


def _quantize(model: Any, calibration: Sequence[dict[str, np.ndarray]], weights: Path, audio: str) -> Any:
    """NNCF's static int8 of ``model`` (``audio``: its audio input), whose float weights OpenVINO
    maps from ``weights``.

    NNCF compiles a statistics model before it reads the first calibration input; from then
    on the plugin computes from its own copies of the weights, and NNCF reads ``weights`` again
    only to build the quantized model, so their pages are handed back at the first input.
    The result is the same, constant for constant. Measured on HuBERT base (8 espeak-ng sentences,
    24 segments), PSS at the peak of the quantizing child / of optimize's whole process tree:
    1343 / 1466 MB with the ONNX read into the heap and torch imported, 1146 / 1268 MB without
    torch, 947 / 1070 MB (2.8x the file) mapped and handed back.
    """
    # NNCF imports torch for its torch backend where torch is installed; its OpenVINO backend does not
    # use it. Unless this process has torch already, the import is refused (an ImportError, which NNCF
    # expects): 197 MB and 1.3 s less. The child exits after.
    sys.modules.setdefault("torch", None)
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, AdvancedSmoothQuantParameters

    mapped = [str(weights)]

    def feed(item: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if mapped:  # the first input: the statistics model is compiled
            page_out([mapped.pop()])
        return item

    nncf.set_log_level(logging.ERROR)
    return nncf.quantize(
        model,
        nncf.Dataset(list(calibration), feed),
        model_type=nncf.ModelType.TRANSFORMER,
        subset_size=len(calibration),
        ignored_scope=nncf.IgnoredScope(
            names=attention_outputs(model) + feature_projections(model, audio), types=["Convolution"], validate=False
        ),
        advanced_parameters=AdvancedQuantizationParameters(
            smooth_quant_alphas=AdvancedSmoothQuantParameters(matmul=-1)
        ),
    )


#: Ops between two MatMuls that leave the values as they are (layout, element type).
_PASS_THROUGH = {"Reshape", "Transpose", "Convert", "Squeeze", "Unsqueeze"}


def attention_outputs(model: Any) -> list[str]:
    """The projections that read attention's weighted sum, ``softmax(QK^T) V``: fairseq's and
    transformers' ``out_proj``, found by structure, not by name.

    Measured on HuBERT base (README): with these in int8, the 1-frame input's cosine fell
    to 0.994; kept in float, 0.9996, at the same speed.
    """
    names = []
    for op in model.get_ordered_ops():
        if op.get_type_name() != "MatMul" or _source(op, 1).get_type_name() != "Constant":
            continue
        product = _source(op, 0)
        if product.get_type_name() == "MatMul" and _source(product, 0).get_type_name() == "Softmax":
            names.append(op.get_friendly_name())
    return names


def feature_projections(model: Any, audio: str) -> list[str]:
    """The MatMuls with constant weights that the ``audio`` input reaches with no MatMul before them:
    the projection of the convolutions' features (fairseq's ``post_extract_proj``, transformers'
    ``feature_projection``), found by structure, by the rule ``quantize.feature_projections``
    follows for ONNX Runtime. Shape arithmetic (ShapeOf) is not followed: the padding mask's
    lengths read the features' shape. (Searching back from each MatMul for a Convolution took a
    conformer's layers too: their pointwise convolutions.)

    Measured on HuBERT base (docs/deployment.md): with this projection in int8 (its input one
    per-tensor range), the worst frame of 10 s of noise fell to cosine 0.9987; kept in float, 0.9997.
    """
    (start,) = [parameter for parameter in model.get_parameters() if audio in parameter.output(0).get_names()]
    todo, seen, found = [start], set(), set()
    while todo:
        for output in todo.pop().outputs():
            for target in output.get_target_inputs():
                node = target.get_node()
                if node.get_type_name() == "MatMul":
                    if target.get_index() == 0 and _source(node, 1).get_type_name() == "Constant":
                        found.add(node.get_friendly_name())
                elif node.get_type_name() != "ShapeOf" and node.get_friendly_name() not in seen:
                    seen.add(node.get_friendly_name())
                    todo.append(node)
    return [op.get_friendly_name() for op in model.get_ordered_ops() if op.get_friendly_name() in found]


def _source(op: Any, index: int) -> Any:
    """The op that computes input ``index`` of ``op``, through layout-only ops."""
    node = op.input(index).get_source_output().get_node()
    while node.get_type_name() in _PASS_THROUGH:
        node = node.input(0).get_source_output().get_node()
    return node


def _isolated(work: Callable[[], bytes], name: str, doing: str, folder: Path) -> bytes:
    """``work`` in a child; its errors as one line: writing into ``folder`` failed (the disk, not the
    model: ``_save``), or OpenVINO failed ``doing`` the model ``name``."""
    try:
        return isolated(work, name, doing)
    except ChildError as exc:
        if exc.kind == "OSError":
            raise UnusableInputError(f"{folder}: cannot write: {one_line(str(exc).partition(': ')[2])}") from None
        if exc.kind == "RuntimeError":  # OpenVINO's and NNCF's own errors
            raise UnusableInputError(
                f"{name}: OpenVINO failed {doing} it: {message(str(exc).partition(': ')[2])}"
            ) from None
        raise


def calibrating(audio: Stored, face: Interface) -> list[dict[str, np.ndarray]]:
    """NNCF's calibration inputs: the speech cases in equal segments of at most ``CALIBRATION_SECONDS``
    (unpadded batch 1), the first ``MAX_CALIBRATION`` of them."""
    longest = CALIBRATION_SECONDS * face.sample_rate
    pieces = [piece for _, source, _, _ in audio for piece in equal_segments(source[0], longest)]
    return [face.feeds(piece[None, :], np.zeros((1, len(piece)), dtype=bool)) for piece in pieces[:MAX_CALIBRATION]]


def for_openvino(
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
    fallback: Tolerance | None = None,
) -> OptimizeReport:
    """Convert (and quantize) to IR in a private folder, validate that file, then move it to OUT.

    ``fallback``: the default bf16 missed its tolerance? Then the same IR is validated in
    fp32 within ``fallback`` (the user compiles it with the f32 hint; ``report.dropped`` says why).
    """
    say = progress or (lambda message: None)
    out, name = Path(report.output), report.model
    folder = staging(out)
    try:
        staged = folder / "model.xml"
        calibration = calibrating(audio, face) if report.precision == "int8" else []
        say(f"converting to OpenVINO IR ({report.precision})")
        started = time.perf_counter()
        quantized = convert(loaded.source, staged, calibration=calibration, audio=face.audio.name, name=name)
        report.steps.append(Step("openvino-ir", 1, "converted by OpenVINO's ONNX front end, weights in fp32"))
        if calibration:
            report.steps.append(
                Step(
                    "int8-static",
                    quantized,
                    f"FakeQuantize ops calibrated on {len(calibration)} audio segment(s) of at most "
                    f"{CALIBRATION_SECONDS} s",
                )
            )
        report.rewrite_seconds = round(time.perf_counter() - started, 3)

        def check(tolerance: Tolerance) -> None:
            hint = "fp32" if report.precision == "fp32" else None  # else the plugin's choice: a plain compile's
            if hint:  # the plugin would choose bf16 on a CPU with it: the user must ask for fp32 too
                report.openvino_config = {"INFERENCE_PRECISION_HINT": HINTS[hint]}
            report.checkpoint_validation = None
            validate_candidate(
                loaded, report, stored, face, tolerance, checkpoint_reference, quick=quick, progress=progress,
                saved=staged, hint=hint,
            )  # fmt: skip

        check(tol)
        if not report.ok and fallback is not None:
            missed = first_failure(report)
            say(f"bf16 missed its tolerance ({missed}): validating the IR in fp32 instead")
            report.dropped.append(f"bf16: {missed}")
            report.precision, tol = "fp32", fallback
            check(tol)
        if not report.ok:
            return report
        final = folder / "final.xml"
        annotate(staged, final, record(report, tol), name)
        commit(final, out)
        report.output_bytes = out.stat().st_size + out.with_suffix(".bin").stat().st_size
        return report
    finally:
        discard(folder)
