"""Validate a model on ONNX Runtime over the edge-length input matrix.

For every case: the session runs, the output has shape [B, frames, C] with frames
derived from the conv stack, and holds no NaN/Inf; with a reference (a fairseq
checkpoint, or stored reference outputs) it must also match PyTorch on the same padded
batch within the tolerances below.

Parity compares the same padded batch on both sides on purpose: fairseq's default
extractor uses GroupNorm over time, so an utterance alone and inside a padded batch do
not give the same features even in PyTorch.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from hubert_fix.errors import DeviceUnavailableError, UnusableInputError
from hubert_fix.matrix import Case, ConvStack, cases, static_cases
from hubert_fix.model_io import one_line
from hubert_fix.skeleton import weightless

log = logging.getLogger(__name__)

# Parity tolerances: (max abs diff, min cosine similarity) per precision.
TOLERANCES = {"fp32": (1e-3, 0.9999), "fp16": (5e-2, 0.999)}

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"

Reference = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (source, padding_mask) -> features


def create_session(model: bytes | str, name: str, *, device: str) -> ort.InferenceSession:
    """An ORT session on ``device`` (cpu, cuda or auto), checked against what really runs.

    onnxruntime-gpu lists CUDAExecutionProvider even without a GPU and silently falls
    back to CPU, so the providers of the created session are what count.
    """
    options = ort.SessionOptions()
    options.log_severity_level = 4  # run failures are caught and reported by us, as one line each
    if device == "cpu":
        return ort.InferenceSession(model, options, providers=[CPU])
    if device == "cuda" and CUDA not in ort.get_available_providers():
        raise DeviceUnavailableError(f"{name}: --device cuda: this onnxruntime has no CUDAExecutionProvider")
    ort.set_default_logger_severity(4)  # a CUDA EP that fails to load logs errors; we report it once
    try:
        session = ort.InferenceSession(model, options, providers=[CUDA, CPU])
    finally:
        ort.set_default_logger_severity(2)
    if session.get_providers()[0] == CUDA:
        return session
    if device == "cuda":
        raise DeviceUnavailableError(
            f"{name}: --device cuda: CUDAExecutionProvider did not start (no usable GPU/CUDA libraries); "
            "use --device cpu or auto"
        )
    log.info("CUDA is not usable here; validating on CPU")
    return ort.InferenceSession(model, options, providers=[CPU])


def ort_message(exc: Exception) -> str:
    """ORT's error without its status prefix and C++ source location, on one line."""
    text = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", str(exc))
    text = re.sub(r"/onnxruntime_src/\S+:\d+ (?:[^()]*\([^)]*\) )?", "", text)
    return one_line(text)


@dataclass
class CaseResult:
    name: str
    batch: int
    samples: int
    ok: bool
    failures: list[str] = field(default_factory=list)
    shape: list[int] | None = None
    expected_shape: list[int] | None = None
    max_abs_diff: float | None = None
    cosine: float | None = None
    seconds: float = 0.0


@dataclass
class ValidationReport:
    model: str
    provider: str
    precision: str
    reference: str  # "none", "checkpoint", "stored"
    tolerance: dict[str, float] | None
    cases: list[CaseResult] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # cases the model's fixed input shape rules out

    @property
    def ok(self) -> bool:
        return bool(self.cases) and all(c.ok for c in self.cases)

    def to_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["ok"] = self.ok
        return data


@dataclass(frozen=True)
class ModelFacts:
    """What validation needs to know about the model's interface."""

    audio: str  # input name of the waveform
    mask: str | None  # input name of the padding mask (None if the export dropped it)
    audio_dtype: np.dtype
    stack: ConvStack
    embed_dim: int  # C, the encoder width: the matrix's frames == C cases
    output_dim: int  # the output's last dim (C, or final_proj's width)
    precision: str
    static: tuple[int | None, int | None]  # the waveform input's [batch, samples] where fixed

    def fits(self, case: Case) -> bool:
        return all(fixed is None or fixed == dim for fixed, dim in zip(self.static, (case.batch, case.samples)))


def model_facts(model: onnx.ModelProto, name: str) -> ModelFacts:
    """Find the inputs, the conv stack and C: from export metadata, else from the graph."""
    meta = {p.key: p.value for p in model.metadata_props}
    audio = mask = None
    audio_dtype = np.dtype(np.float32)
    static: tuple[int | None, int | None] = (None, None)
    for graph_input in model.graph.input:
        elem = graph_input.type.tensor_type.elem_type
        if elem == onnx.TensorProto.BOOL and mask is None:
            mask = graph_input.name
        elif elem in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16) and audio is None:
            audio = graph_input.name
            audio_dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem))
            dims = graph_input.type.tensor_type.shape.dim
            if len(dims) == 2:
                static = tuple(d.dim_value if d.HasField("dim_value") else None for d in dims)
    if audio is None:
        raise UnusableInputError(f"{name}: no float waveform input found; is this a speech encoder export?")
    if "hubert_fix.conv_stack" in meta:
        stack = tuple(tuple(pair) for pair in json.loads(meta["hubert_fix.conv_stack"]))
    else:
        stack = _conv_stack_from_graph(model)
    if not stack:
        raise UnusableInputError(f"{name}: cannot find the conv feature extractor (no 1-D Conv layers)")
    embed_dim = int(meta.get("hubert_fix.embed_dim") or _static_last_dim(model) or 0)
    if not embed_dim:
        raise UnusableInputError(f"{name}: the output's feature width C is not static and not recorded in metadata")
    precision = "fp16" if audio_dtype == np.float16 else meta.get("hubert_fix.precision", "fp32")
    output_dim = int(meta.get("hubert_fix.output_dim") or embed_dim)
    return ModelFacts(audio, mask, audio_dtype, stack, embed_dim, output_dim, precision, static)


def _conv_stack_from_graph(model: onnx.ModelProto) -> ConvStack:
    """(kernel, stride) of the ungrouped 1-D convolutions without padding, in graph order.

    That is the fairseq conv feature extractor; the positional conv is grouped and
    padded, so it is not counted. Graph order is the exporter's topological order.
    """
    stack = []
    for node in model.graph.node:
        if node.op_type != "Conv":
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        kernel = list(attrs.get("kernel_shape", []))
        if len(kernel) != 1 or attrs.get("group", 1) != 1 or any(attrs.get("pads", [])):
            continue
        if any(d != 1 for d in attrs.get("dilations", [1])):
            continue
        stack.append((int(kernel[0]), int(list(attrs.get("strides", [1]))[0])))
    return tuple(stack)


def _static_last_dim(model: onnx.ModelProto) -> int | None:
    """C as the output declares it, else as ONNX shape inference finds it."""
    dims = model.graph.output[0].type.tensor_type.shape.dim
    if dims and dims[-1].HasField("dim_value"):
        return dims[-1].dim_value
    try:
        inferred = onnx.shape_inference.infer_shapes(weightless(model), strict_mode=False, data_prop=True)
    except Exception:  # noqa: BLE001 - inference is best effort; the caller reports C as unknown
        return None
    name = model.graph.output[0].name
    for info in [*inferred.graph.output, *inferred.graph.value_info]:
        dims = info.type.tensor_type.shape.dim
        if info.name == name and dims and dims[-1].HasField("dim_value"):
            return dims[-1].dim_value
    return None


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
    except (OSError, ValueError, KeyError) as exc:
        raise UnusableInputError(f"{path}: not a reference file: {one_line(exc)}") from None
    if not stored:
        raise UnusableInputError(f"{path}: no cases (expected case0.source, case0.padding_mask, case0.features)")
    return stored


def validate(
    model: onnx.ModelProto,
    name: str,
    *,
    device: str = "auto",
    reference: Reference | None = None,
    stored: list[tuple[Case, np.ndarray, np.ndarray, np.ndarray]] | None = None,
    quick: bool = False,
    progress: Callable[[str], None] | None = None,
    path: Path | None = None,
) -> ValidationReport:
    """Run the matrix (or the stored cases) and check every output.

    ``reference`` computes PyTorch features for the same inputs (``--checkpoint``);
    ``stored`` brings inputs with reference outputs (``--reference``). ``path``, the
    file ``model`` was loaded from, is what ONNX Runtime loads (with its weights);
    without it ``model`` must be complete and is serialized.
    """
    facts = model_facts(model, name)
    try:
        session = create_session(str(path) if path else model.SerializeToString(), name, device=device)
    except (DeviceUnavailableError, UnusableInputError):
        raise
    except Exception as exc:  # ORT raises its own exception types on graphs it rejects
        report = ValidationReport(name, "none", facts.precision, "none", None)
        failure = f"ONNX Runtime rejects the model: {ort_message(exc)}"
        report.cases.append(CaseResult("session creation", 0, 0, False, [failure]))
        return report
    provider = session.get_providers()[0]
    kind = "checkpoint" if reference else "stored" if stored else "none"
    tol = TOLERANCES[facts.precision] if kind != "none" else None
    report = ValidationReport(
        name, provider, facts.precision, kind, {"max_abs_diff": tol[0], "min_cosine": tol[1]} if tol else None
    )
    if stored is None:
        matrix = cases(facts.stack, facts.embed_dim, full=not quick)
        if None not in facts.static:
            matrix = static_cases(*facts.static) + matrix
        stored = [(case, *case.inputs(), None) for case in matrix]
    report.skipped = [
        f"{case.name} (batch {case.batch}, {case.samples} samples): the model's input is fixed at "
        f"[{', '.join('?' if d is None else str(d) for d in facts.static)}]"
        for case, *_ in stored
        if not facts.fits(case)
    ]
    stored = [entry for entry in stored if facts.fits(entry[0])]
    if not stored:
        failure = "no stored case fits the model's fixed input shape; validate with --checkpoint"
        report.cases.append(CaseResult("fixed input shape", 0, 0, False, [failure]))
    for index, (case, source, mask, expected) in enumerate(stored, 1):
        if progress:
            progress(f"[{index}/{len(stored)}] {case.name}: batch {case.batch}, {case.samples} samples")
        if expected is None and reference is not None:
            expected = reference(source, mask)
        result = _run_case(session, facts, case, source, mask, expected, tol)
        report.cases.append(result)
    return report


def _run_case(
    session: ort.InferenceSession,
    facts: ModelFacts,
    case: Case,
    source: np.ndarray,
    mask: np.ndarray,
    expected: np.ndarray | None,
    tol: tuple[float, float] | None,
) -> CaseResult:
    result = CaseResult(case.name, case.batch, case.samples, ok=True)
    feeds = {facts.audio: source.astype(facts.audio_dtype)}
    if facts.mask is not None:
        feeds[facts.mask] = mask
    elif mask.any():
        result.ok = False
        result.failures.append("model has no padding_mask input, padded batches cannot be right")
    start = time.perf_counter()
    try:
        output = session.run(None, feeds)[0]
    except Exception as exc:  # ORT's runtime errors: the check that it runs
        result.ok = False
        result.failures.append(f"ONNX Runtime failed: {ort_message(exc)}")
        return result
    finally:
        result.seconds = round(time.perf_counter() - start, 4)
    result.shape = list(output.shape)
    result.expected_shape = [case.batch, case.expected_frames(facts.stack), facts.output_dim]
    if result.shape != result.expected_shape:
        result.failures.append(f"output shape {result.shape}, expected {result.expected_shape}")
    output = output.astype(np.float32)
    if not np.isfinite(output).all():
        bad = int((~np.isfinite(output)).sum())
        result.failures.append(f"{bad} NaN/Inf value(s) in the output")
    if expected is not None and tol is not None and output.shape == expected.shape:
        diff = np.abs(output.astype(np.float64) - expected.astype(np.float64))
        result.max_abs_diff = float(np.nanmax(diff)) if diff.size else 0.0
        a, b = output.ravel().astype(np.float64), expected.ravel().astype(np.float64)
        denom = float(np.linalg.norm(a) * np.linalg.norm(b))
        result.cosine = float(a @ b / denom) if denom else (1.0 if not a.any() and not b.any() else 0.0)
        if not result.max_abs_diff <= tol[0]:
            result.failures.append(f"max abs diff {result.max_abs_diff:.3g} > {tol[0]:g} vs reference")
        if not result.cosine >= tol[1]:
            result.failures.append(f"cosine {result.cosine:.6f} < {tol[1]} vs reference")
    elif expected is not None and output.shape != expected.shape:
        result.failures.append(f"reference has shape {list(expected.shape)}, output {result.shape}")
    result.ok = not result.failures
    return result
