"""The Python API: ``check``, ``repair``, ``validate``, ``optimize`` and ``export`` on files, as the CLI runs them.

Each returns a typed report (the same content as the CLI's ``--json``: ``report.to_dict()``)
and raises only ``HubertFixError`` subclasses for what the caller can act on
(``UnusableInputError``: the input or output path cannot be used; ``UnrepairableError``:
a problem no pass can repair, nothing written, ``error.report`` says what was found;
``DeviceUnavailableError``; ``MissingExtraError``). Arguments are never modified. torch
and fairseq are imported only when a checkpoint is given.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import numpy as np

from hubert_fix import metadata, runner
from hubert_fix.analysis.interface import Interface, describe
from hubert_fix.deploy.optimize import OptimizeReport
from hubert_fix.deploy.optimize import optimize as run_optimize
from hubert_fix.errors import UnusableInputError, argument
from hubert_fix.exporter import pytorch_reference, require
from hubert_fix.onnxio.outputs import check_model_output, check_output_path, data_path, read_files, same_file
from hubert_fix.onnxio.reading import ModelFile, load_model
from hubert_fix.onnxio.runtimes import ONNXRUNTIME
from hubert_fix.onnxio.writing import save_model, write_bytes
from hubert_fix.validation.audio import audio_cases
from hubert_fix.validation.cases import load_reference_cases
from hubert_fix.validation.junit import junit_xml as junit
from hubert_fix.validation.report import NOTHING, Expected, Reference, Tolerance, ValidationReport
from hubert_fix.validation.run import validate as run_validation

StrPath = str | PathLike[str]


def check(model: StrPath, *, skip: Sequence[str] = ()) -> runner.Report:
    """What ``repair`` would change in ``model`` (a file), proven to load; writes nothing.

    ``report.edits`` lists the repairs, ``report.blocking`` counts the problems no pass
    can repair; both empty means the model is fine as it is, unless ``report.skipped``
    names passes that ``skip`` left out (what they would find is not known).
    """
    path = Path(model)
    return runner.check(load_model(path).proto, str(path), skip=tuple(skip))


def repair(model: StrPath, out: StrPath, *, skip: Sequence[str] = (), in_place: bool = False) -> runner.Report:
    """Write the repaired ``model`` to ``out`` (atomically; ``out == model`` only with ``in_place``).

    Raises UnrepairableError (nothing written) when a problem cannot be repaired.
    """
    path, target = Path(model), Path(out)
    if not in_place and same_file(target, path):
        raise UnusableInputError(
            f"{target}: output is the input model; choose another {argument('out')}, or {argument('in_place', True)}"
        )
    check_output_path(target, reads=[path], replaces=path if in_place else None)  # before any work
    loaded = load_model(path)
    check_model_output(loaded, target, read_files(loaded), in_place=in_place)
    _, report = runner.repair(loaded.proto, str(path), skip=tuple(skip))
    save_model(loaded, target, in_place=in_place)
    return report


def validate(
    model: StrPath,
    *,
    checkpoint: StrPath | None = None,
    reference: StrPath | None = None,
    device: str = "auto",
    quick: bool = False,
    roles: Mapping[str, str] | None = None,
    output_layer: int | None = None,
    final_proj: bool | None = None,
    trust_checkpoint: bool = False,
    dict_dir: StrPath | None = None,
    junit_xml: StrPath | None = None,
    progress: Callable[[str], None] | None = None,
    runtime: str = ONNXRUNTIME,
    audio: Sequence[StrPath] = (),
) -> ValidationReport:
    """Run ``model`` on ONNX Runtime over the cases its interface admits (see the README).

    ``checkpoint`` (a fairseq checkpoint: needs the [export] extra) or ``reference`` (a
    ``CASES.npz``) adds parity with PyTorch; ``roles`` ({input name: "audio",
    "padding_mask" or "attention_mask"}) overrides what the inputs are taken to be;
    ``output_layer`` and ``final_proj`` default to what the export recorded; ``dict_dir``,
    the folder of a CTC fine-tune's ``dict.ltr.txt`` when the checkpoint lacks it;
    ``junit_xml``, a file to write a JUnit XML report to (never one of the files read);
    ``runtime``, "onnxruntime" or "openvino" (the [openvino] extra: OpenVINO's CPU plugin,
    in the precision it chooses on this CPU); ``audio``, speech files (WAV, FLAC, OGG: the
    [audio] extra) run as further cases, compared with the checkpoint when one is given.
    ``report.ok`` is the verdict.
    """
    if checkpoint is not None and reference is not None:
        raise UnusableInputError("validate: give a checkpoint or a reference file, not both")
    path = Path(model)
    given = [path, *(Path(f) for f in (reference, checkpoint, *audio) if f is not None)]
    report_path = Path(junit_xml) if junit_xml is not None else None
    if report_path is not None:
        check_output_path(report_path, reads=given)  # before any work
    loaded = load_model(path)
    if report_path is not None:
        check_output_path(report_path, reads=read_files(loaded, files=given, dict_dir=_path(dict_dir)))
    findings = runner.findings(runner.check(loaded.proto, str(path)))  # also: ORT cannot load it at all
    face = describe(loaded.proto, str(path), dict(roles or {}))
    expected = Expected.stored(load_reference_cases(Path(reference))) if reference is not None else NOTHING
    if checkpoint is not None:
        expected = Expected.pytorch(
            _checkpoint_reference(
                Path(checkpoint), loaded, face, device=device, output_layer=output_layer, final_proj=final_proj,
                trust=trust_checkpoint, dict_dir=dict_dir,
            )
        )  # fmt: skip
    report = run_validation(
        loaded, str(path), expected=expected, saved=path, face=face, findings=findings, device=device, quick=quick,
        progress=progress, runtime=runtime, audio=audio_cases([Path(f) for f in audio]),
    )  # fmt: skip
    if report_path is not None:
        write_bytes(report_path, junit(report))
    return report


def optimize(
    model: StrPath,
    out: StrPath,
    *,
    precision: str | None = None,
    runtime: str = ONNXRUNTIME,
    calibration_audio: Sequence[StrPath] = (),
    checkpoint: StrPath | None = None,
    tolerance: Tolerance | None = None,
    device: str = "auto",
    quick: bool = False,
    trust_checkpoint: bool = False,
    dict_dir: StrPath | None = None,
    progress: Callable[[str], None] | None = None,
) -> OptimizeReport:
    """Write a faster ``model`` to ``out``: fp32 rewrites, or ``precision`` "int8" (CPU) or "fp16" (GPU).

    ``runtime`` "openvino" (the [openvino] extra) writes OpenVINO IR (``out`` an ``.xml``)
    in the fastest float precision of this CPU, or ``precision`` "fp32", "bf16" or
    "int8" (static, calibrated on ``calibration_audio``: speech files, which every
    precision is also validated on).

    Validated before it is written, against ``model``'s own outputs (and fairseq's with
    ``checkpoint``) within ``tolerance`` (default: ``hubert_fix.validation.report.OPTIMIZED_TOLERANCES``).
    ``report.ok`` False: missed, nothing written. Raises UnrepairableError for a model
    ``check`` would change (repair it first).
    """
    build = None
    if checkpoint is not None:

        def build(loaded: ModelFile, face: Interface) -> Reference:
            return _checkpoint_reference(
                Path(checkpoint), loaded, face, device=device, trust=trust_checkpoint, dict_dir=dict_dir
            )

    return run_optimize(
        Path(model), Path(out), precision=precision, runtime=runtime, calibration_audio=[Path(f) for f in calibration_audio],
        tolerance=tolerance, device=device, quick=quick,
        checkpoint_reference=build, progress=progress, reads=read_files(files=[_path(checkpoint)], dict_dir=_path(dict_dir)),
    )  # fmt: skip


@dataclass
class ExportReport:
    """What ``export`` did: the repair and the validation (None with ``raw``), and whether OUT was written."""

    checkpoint: str
    output: str
    raw: bool
    repair: runner.Report | None = None
    validation: ValidationReport | None = None

    @property
    def ok(self) -> bool:
        """OUT was written: the repaired export validated (or ``raw`` asked for no validation)."""
        return self.validation is None or self.validation.ok

    def to_dict(self) -> dict[str, object]:
        data: dict[str, object] = {"checkpoint": self.checkpoint, "output": self.output, "raw": self.raw, "ok": self.ok}
        if self.repair is not None:
            data["repair"] = self.repair.to_dict()
        if self.validation is not None:
            data["validation"] = self.validation.to_dict()
        return data


def export(
    checkpoint: StrPath,
    out: StrPath,
    *,
    opset: int = 17,
    output_layer: int | None = None,
    final_proj: bool = False,
    fp16: bool = False,
    device: str = "cpu",
    raw: bool = False,
    trust_checkpoint: bool = False,
    dict_dir: StrPath | None = None,
    progress: Callable[[str], None] | None = None,
) -> ExportReport:
    """Export a fairseq checkpoint's ``extract_features`` (a CTC fine-tune: its logits) as-is, repair it,
    validate it against fairseq in PyTorch, and write ``out`` only if that passes (``report.ok``).

    ``raw`` writes the unrepaired export and skips repair and validation. ``device`` is where
    torch traces (and where ONNX Runtime validates with "cuda"); ``dict_dir``, the folder of a
    CTC fine-tune's ``dict.ltr.txt`` when the checkpoint lacks it. Needs the [export] extra.
    Raises UnrepairableError (nothing written) when the export has a problem no pass repairs.
    """
    source, target = Path(checkpoint), Path(out)
    reads = read_files(files=[source], dict_dir=_path(dict_dir))
    for path in (target, data_path(target)):  # torch writes OUT.data for a model over 2 GB
        check_output_path(path, reads=reads)
    say = progress or (lambda message: None)
    say("importing torch and fairseq (a few seconds)")
    require()
    from hubert_fix.exporter import loading, trace

    say(f"loading {source}")
    model = loading.load_checkpoint(source, trust=trust_checkpoint, dict_dir=_path(dict_dir))
    report = ExportReport(str(source), str(target), raw)
    # Files all the way (weights never in memory): a model over 2 GB is written by torch
    # with external data, and OUT then gets its weights in OUT.data.
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{target.name}.") as tmp:
        what = "the CTC logits" if hasattr(model, "_hubert_fix_ctc") else "extract_features"
        say(f"exporting {what} (opset {opset}, {'fp16' if fp16 else 'fp32'}, {device})")
        exported = trace.export_model(
            model, Path(tmp) / "raw.onnx", opset=opset, output_layer=output_layer, fp16=fp16, device=device,
            final_proj=final_proj,
        )  # fmt: skip
        if not raw:
            say("repairing")
            _, report.repair = runner.repair(exported.proto, str(target))
            staged = Path(tmp) / "repaired.onnx"  # what ORT validates; OUT is written from the same skeleton
            save_model(exported, staged)
            say("validating")
            reference = pytorch_reference(
                model, output_layer=output_layer, fp16=fp16, device=device, final_proj=final_proj
            )
            report.validation = run_validation(
                exported, str(target), expected=Expected.pytorch(reference), saved=staged,
                device="cuda" if device == "cuda" else "auto", progress=progress,
            )  # fmt: skip
        if report.ok:
            save_model(exported, target)
    return report


def _path(value: StrPath | None) -> Path | None:
    return Path(value) if value is not None else None


def _checkpoint_reference(
    checkpoint: Path,
    loaded: ModelFile,
    face: Interface,
    *,
    device: str,
    output_layer: int | None = None,
    final_proj: bool | None = None,
    trust: bool = False,
    dict_dir: StrPath | None = None,
) -> Reference:
    """fairseq's features for the model's inputs, as the export recorded them (layer, final_proj, fp16 inputs)."""
    require()
    from hubert_fix.exporter import loading

    meta = metadata.read(loaded.proto)
    fairseq_model = loading.load_checkpoint(
        checkpoint, trust=trust, dict_dir=_path(dict_dir), vocabulary=_recorded_vocabulary(meta)
    )
    layer = output_layer if output_layer is not None else int(meta.get(metadata.OUTPUT_LAYER) or 0) or None
    _same_architecture(checkpoint, loaded, face, meta, fairseq_model, layer)
    fp16 = face.audio.dtype == np.float16  # an fp16 export; an fp16-optimized model takes float32 audio
    project = final_proj if final_proj is not None else meta.get(metadata.FINAL_PROJ) == "1"
    return pytorch_reference(
        fairseq_model,
        output_layer=layer,
        fp16=fp16,
        device=_torch_device(device) if fp16 else "cpu",
        final_proj=project,
    )


def _recorded_vocabulary(meta: dict[str, str]) -> list[str] | None:
    """The CTC symbols our export recorded in the model (None when absent or unreadable)."""
    try:
        symbols = json.loads(meta.get(metadata.VOCABULARY) or "null")
    except ValueError:
        return None
    return symbols if isinstance(symbols, list) and all(isinstance(s, str) for s in symbols) else None


def _same_architecture(
    checkpoint: Path, loaded: ModelFile, face: Interface, meta: dict[str, str], model, layer: int | None
) -> None:
    """A checkpoint that differs from the model in kind, output, depth, width or conv stack
    cannot be its source: exit 2 with the differences, not a run of failed cases. ``layer``:
    the layer the model ends at (--output-layer, or what the export recorded)."""
    from hubert_fix.exporter import modules

    differences = []
    kind = type(model).__name__
    if meta.get(metadata.MODEL) and meta[metadata.MODEL] != kind:
        differences.append(f"a {kind} vs the model's {meta['hubert_fix.model']}")
    ctc = hasattr(model, "_hubert_fix_ctc")
    if ctc != face.ctc:
        what = {True: "CTC logits", False: "encoder features"}
        differences.append(f"it gives {what[ctc]}, the model {what[face.ctc]}")
    stack = modules.conv_stack(model)
    if tuple(map(tuple, stack)) != tuple(map(tuple, face.stack)):
        differences.append(f"conv stack {list(map(list, stack))} vs the model's {list(map(list, face.stack))}")
    width = modules.embed_dim(model)
    if face.width is not None and width != face.width:
        differences.append(f"encoder width {width} vs the model's {face.width}")
    layers = modules.num_layers(model)
    attentions = sum(node.op_type == "Softmax" for node in loaded.proto.graph.node)  # one per transformer layer
    if attentions and attentions != (layer or layers):
        differences.append(f"{layers} transformer layers vs the model's {attentions}")
    if differences:
        raise UnusableInputError(
            f"{checkpoint}: does not match {loaded.source or 'the model'} ({'; '.join(differences)}); "
            "give the checkpoint it was exported from"
        )


def _torch_device(device: str) -> str:
    """The PyTorch device for an fp16 reference: CUDA only when not refused and present."""
    if device == "cpu":
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
