"""Run the rewrite passes: ``check`` finds and plans, ``repair`` applies and verifies.

Each pass sees fresh symbolic facts (``dims.analyze``) of the graph as the previous
passes left it. The repaired graph replaces only ``model.graph``, so the IR version,
opset imports, producer, functions and metadata of the input are kept; the repair is
recorded in ``metadata_props["hubert_fix.repair"]``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import onnx
import onnx_graphsurgeon as gs

from hubert_fix import __version__
from hubert_fix.dims import analyze
from hubert_fix.errors import UnrepairableError, UnusableInputError
from hubert_fix.model_io import checkable, one_line, set_metadata
from hubert_fix.passes import DEFAULT_PASSES
from hubert_fix.passinfra import Edit, Pass, PassResult
from hubert_fix.skeleton import weightless

log = logging.getLogger(__name__)

REPAIR_METADATA_KEY = "hubert_fix.repair"


@dataclass
class Report:
    """What the passes found (check) or did (repair) on one model."""

    model: str
    applied: bool
    results: list[PassResult] = field(default_factory=list)

    @property
    def edits(self) -> list[Edit]:
        return [edit for result in self.results for edit in result.edits]

    @property
    def blocking(self) -> int:
        return sum(d.blocking for result in self.results for d in result.declined)

    def to_dict(self) -> dict[str, object]:
        return {
            "model": self.model,
            "applied": self.applied,
            "edits": len(self.edits),
            "unrepairable": self.blocking,
            "passes": [r.to_dict() for r in self.results],
        }


def select_passes(skip: Sequence[str] = ()) -> tuple[Pass, ...]:
    """The default passes in registry order, less those named in ``skip``."""
    known = {p.name for p in DEFAULT_PASSES}
    unknown = sorted(set(skip) - known)
    if unknown:
        raise UnusableInputError(f"unknown pass {', '.join(unknown)} for --skip; known: {', '.join(sorted(known))}")
    return tuple(p for p in DEFAULT_PASSES if p.name not in skip)


def run_passes(model: onnx.ModelProto, name: str, *, apply: bool, skip: Sequence[str] = ()) -> tuple[gs.Graph, Report]:
    """Run the selected passes over a graphsurgeon import of ``model``."""
    graph = gs.import_onnx(model)
    report = Report(model=name, applied=apply)
    for rewrite in select_passes(skip):
        result = rewrite.run(graph, analyze(graph), apply=apply)
        log.debug("%s: %d edit(s), %d declined", rewrite.name, len(result.edits), len(result.declined))
        if result.modified:
            graph.cleanup().toposort()
        report.results.append(result)
    return graph, report


def check(model: onnx.ModelProto, name: str, *, skip: Sequence[str] = ()) -> Report:
    """Find what ``repair`` would change; the model is not modified."""
    return run_passes(model, name, apply=False, skip=skip)[1]


def repair(model: onnx.ModelProto, name: str, *, skip: Sequence[str] = ()) -> tuple[onnx.ModelProto, Report]:
    """Repair ``model`` in place and return it with the report.

    Raises UnrepairableError when a pass found a defect it cannot repair, and when the
    result fails ``onnx.checker`` or ONNX Runtime session creation: a repaired model
    is only returned once it is known to load.
    """
    graph, report = run_passes(model, name, apply=True, skip=skip)
    if report.blocking:
        raise UnrepairableError(
            f"{name}: {report.blocking} problem(s) no pass can repair (see the report); nothing written",
            report=report,
        )
    if any(r.modified for r in report.results):
        repaired = gs.export_onnx(graph, do_type_check=False)
        model.graph.CopyFrom(repaired.graph)
    _record(model, report, skip)
    _verify(model, name)
    return model, report


def _record(model: onnx.ModelProto, report: Report, skip: Sequence[str]) -> None:
    """Store tool version, passes and edits in metadata_props (replacing an older record)."""
    record = {
        "tool": "hubert-fix",
        "version": __version__,
        "passes": [p.name for p in select_passes(skip)],
        "edits": [edit.to_dict() for edit in report.edits],
    }
    set_metadata(model, {REPAIR_METADATA_KEY: json.dumps(record, sort_keys=True)})


def _verify(model: onnx.ModelProto, name: str) -> None:
    """The repaired model must pass the ONNX checker and load in ONNX Runtime.

    Both check the weightless twin (large weights as graph inputs of the same dtype and
    shape): session creation proves the graph, not the weights, and reads no weight.
    """
    from hubert_fix.validate import create_session, ort_message

    try:
        onnx.checker.check_model(checkable(model))
    except onnx.checker.ValidationError as exc:
        raise UnrepairableError(f"{name}: repaired model fails onnx.checker: {one_line(exc)}; nothing written") from None
    try:
        create_session(weightless(model).SerializeToString(), name, device="cpu")
    except Exception as exc:  # ORT raises its own exception types on graphs it rejects
        raise UnrepairableError(f"{name}: repaired model fails ONNX Runtime session creation: {ort_message(exc)}") from None
