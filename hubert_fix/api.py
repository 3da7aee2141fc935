"""The Python API: ``check``, ``repair``, ``validate``, ``optimize`` and ``export`` on files, as the CLI runs them.

Each returns a typed report (the same content as the CLI's ``--json``: ``report.to_dict()``)
and raises only ``HubertFixError`` subclasses for what the caller can act on
(``UnusableInputError``: the input or output path cannot be used; ``UnrepairableError``:
a problem no pass can repair, nothing written, ``error.report`` says what was found;
``DeviceUnavailableError``; ``MissingExtraError``). Arguments are never modified. torch
and fairseq are imported only when a checkpoint is given.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

from hubert_fix import runner
from hubert_fix.analysis.interface import Interface, describe
from hubert_fix.deploy.optimize import optimize as run_optimize
from hubert_fix.deploy.report import OptimizeReport
from hubert_fix.errors import UnusableInputError, argument
from hubert_fix.exporter import pytorch_reference, require
from hubert_fix.exporter.reference import Checkpoint, Reference, checkpoint_reference
from hubert_fix.onnxio.outputs import check_model_output, check_output_path, data_path, read_files, same_file
from hubert_fix.onnxio.reading import ModelFile, load_model
from hubert_fix.onnxio.runtimes import ONNXRUNTIME
from hubert_fix.onnxio.writing import save_model, write_bytes
from hubert_fix.validation.audio import audio_cases
from hubert_fix.validation.cases import load_reference_cases
from hubert_fix.validation.junit import junit_xml as junit
from hubert_fix.validation.report import NOTHING, Expected, Tolerance, ValidationReport
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
    checkpoint: StrPath | Checkpoint | None = None,
    reference: StrPath | None = None,
    device: str = "auto",
    quick: bool = False,
    roles: Mapping[str, str] | None = None,
    junit_xml: StrPath | None = None,
    progress: Callable[[str], None] | None = None,
    runtime: str = ONNXRUNTIME,
    audio: Sequence[StrPath] = (),
) -> ValidationReport:
    """Run ``model`` on ONNX Runtime over the cases its interface admits (see the README).

    ``checkpoint`` (a fairseq checkpoint's path, or a ``hubert_fix.Checkpoint`` saying how to
    read it: needs the [export] extra) or ``reference`` (a ``CASES.npz``) adds parity with
    PyTorch; ``roles`` ({input name: "audio", "padding_mask", "attention_mask" or
    "lengths"}) overrides what the inputs are taken to be; ``junit_xml``, a file to write a
    JUnit XML report to (never one of the files read); ``runtime``, "onnxruntime" or
    "openvino" (the [openvino] extra: OpenVINO's CPU plugin, in the precision it chooses on
    this CPU); ``audio``, speech files (WAV, FLAC, OGG: the [audio] extra) run as further
    cases, compared with the checkpoint when one is given. ``report.ok`` is the verdict.
    """
    source = Checkpoint.given(checkpoint)
    if source is not None and reference is not None:
        raise UnusableInputError("validate: give a checkpoint or a reference file, not both")
    path = Path(model)
    given = [path, *(Path(f) for f in (reference, *audio) if f is not None), *(source.reads() if source else [])]
    report_path = Path(junit_xml) if junit_xml is not None else None
    if report_path is not None:
        check_output_path(report_path, reads=given)  # before any work
    loaded = load_model(path)
    if report_path is not None:
        check_output_path(report_path, reads=read_files(loaded, files=given))
    findings = runner.findings(runner.check(loaded.proto, str(path)))  # also: ORT cannot load it at all
    face = describe(loaded.proto, str(path), dict(roles or {}))
    expected = Expected.stored(load_reference_cases(Path(reference))) if reference is not None else NOTHING
    if source is not None:
        expected = Expected.pytorch(checkpoint_reference(source, loaded, face, device=device))
    report = run_validation(
        loaded, str(path), expected=expected, saved=path, face=face, findings=findings, device=device, quick=quick,
        progress=progress, runtime=runtime, audio=audio_cases([Path(f) for f in audio], rate=face.sample_rate),
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
    checkpoint: StrPath | Checkpoint | None = None,
    tolerance: Tolerance | None = None,
    device: str = "auto",
    quick: bool = False,
    progress: Callable[[str], None] | None = None,
) -> OptimizeReport:
    """Write a faster ``model`` to ``out``: fp32 rewrites, or ``precision`` "int8" (CPU) or "fp16" (GPU).

    ``runtime`` "openvino" (the [openvino] extra) writes OpenVINO IR (``out`` an ``.xml``)
    in the fastest float precision of this CPU, or ``precision`` "fp32", "bf16" or
    "int8" (static, calibrated on ``calibration_audio``: speech files, which every
    precision is also validated on).

    Validated before it is written, against ``model``'s own outputs (and fairseq's with
    ``checkpoint``, as in ``validate``) within ``tolerance`` (default:
    ``hubert_fix.validation.report.OPTIMIZED_TOLERANCES``). ``report.ok`` False: missed,
    nothing written. Raises UnrepairableError for a model ``check`` would change (repair it first).
    """
    source = Checkpoint.given(checkpoint)
    build = None
    if source is not None:

        def build(loaded: ModelFile, face: Interface) -> Reference:
            return checkpoint_reference(source, loaded, face, device=device)

    return run_optimize(
        Path(model), Path(out), precision=precision, runtime=runtime,
        calibration_audio=[Path(f) for f in calibration_audio], tolerance=tolerance, device=device, quick=quick,
        checkpoint_reference=build, progress=progress, reads=source.reads() if source else [],
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
    checkpoint: StrPath | Checkpoint,
    out: StrPath,
    *,
    opset: int = 17,
    fp16: bool = False,
    device: str = "cpu",
    raw: bool = False,
    progress: Callable[[str], None] | None = None,
) -> ExportReport:
    """Export a fairseq checkpoint's ``extract_features`` (a CTC fine-tune: its logits) as-is, repair it,
    validate it against fairseq in PyTorch, and write ``out`` only if that passes (``report.ok``).

    ``checkpoint``: its path, or a ``hubert_fix.Checkpoint`` (how to read it: ``trust_checkpoint``,
    ``dict_dir``; what to export: ``output_layer``, 1-based, default the last; ``final_proj``).
    ``raw`` writes the unrepaired export and skips repair and validation. ``device`` is where
    torch traces (and where ONNX Runtime validates with "cuda"). Needs the [export] extra.
    Raises UnrepairableError (nothing written) when the export has a problem no pass repairs.
    """
    source, target = Checkpoint.given(checkpoint), Path(out)
    for path in (target, data_path(target)):  # torch writes OUT.data for a model over 2 GB
        check_output_path(path, reads=source.reads())
    say = progress or (lambda message: None)
    say("importing torch and fairseq (a few seconds)")
    require()
    from hubert_fix.exporter import trace

    say(f"loading {source.file}")
    model = source.load()
    layer, project = source.output_layer, bool(source.final_proj)
    report = ExportReport(str(source.file), str(target), raw)
    # Files all the way (weights never in memory): a model over 2 GB is written by torch
    # with external data, and OUT then gets its weights in OUT.data.
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{target.name}.") as tmp:
        what = "the CTC logits" if hasattr(model, "_hubert_fix_ctc") else "extract_features"
        say(f"exporting {what} (opset {opset}, {'fp16' if fp16 else 'fp32'}, {device})")
        exported = trace.export_model(
            model, Path(tmp) / "raw.onnx", opset=opset, output_layer=layer, fp16=fp16, device=device,
            final_proj=project,
        )  # fmt: skip
        if not raw:
            say("repairing")
            _, report.repair = runner.repair(exported.proto, str(target))
            staged = Path(tmp) / "repaired.onnx"  # what ORT validates; OUT is written from the same skeleton
            save_model(exported, staged)
            say("validating")
            reference = pytorch_reference(model, output_layer=layer, fp16=fp16, device=device, final_proj=project)
            report.validation = run_validation(
                exported, str(target), expected=Expected.pytorch(reference), saved=staged,
                device="cuda" if device == "cuda" else "auto", progress=progress,
            )  # fmt: skip
        if report.ok:
            save_model(exported, target)
    return report
