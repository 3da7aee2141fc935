"""Run the rewrite passes: ``check`` finds and plans, ``repair`` applies and verifies.

Each pass sees fresh symbolic facts (``dims.analyze``) of the graph as the previous
passes left it. The repaired graph replaces only ``model.graph``, so the IR version,
opset imports, producer, functions and metadata of the input are kept; the repair is
recorded in ``metadata_props["hubert_fix.repair"]`` (``metadata.REPAIR``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import onnx
import onnx_graphsurgeon as gs

from hubert_fix import metadata
from hubert_fix.analysis.dims import analyze
from hubert_fix.analysis.interface import graph_precision
from hubert_fix.analysis.shapes import INFERENCE_BUDGET
from hubert_fix.errors import UnrepairableError, UnusableInputError, UsageError, argument, one_line
from hubert_fix.onnxio.checking import checkable
from hubert_fix.onnxio.isolation import Crashed
from hubert_fix.onnxio.session import OrtCrash, load_error
from hubert_fix.onnxio.skeleton import weightless
from hubert_fix.passes import DEFAULT_PASSES
from hubert_fix.passes.contract import Edit, PassResult, RewritePass

log = logging.getLogger(__name__)


@dataclass
class Report:
    """What the passes found (check) or did (repair) on one model."""

    model: str
    applied: bool
    results: list[PassResult] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # passes left out (skip): what they find is not known

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
            # made (repair), or that repair would make (check): none where it would refuse
            "edits": 0 if self.blocking else len(self.edits),
            "repairable": len(self.edits),
            "unrepairable": self.blocking,
            "skipped": self.skipped,
            # check repairs a copy to verify it: the model itself is modified only by repair
            "passes": [{**r.to_dict(), "modified": r.modified and self.applied} for r in self.results],
        }


def select_passes(skip: Sequence[str] = ()) -> tuple[RewritePass, ...]:
    """The default passes in registry order, less those named in ``skip``."""
    known = {p.name for p in DEFAULT_PASSES}
    unknown = sorted(set(skip) - known)
    if unknown:
        raise UsageError(f"{argument('skip')}: unknown pass {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    selected = tuple(p for p in DEFAULT_PASSES if p.name not in skip)
    if not selected:
        raise UsageError(f"{argument('skip')} leaves no pass to run: nothing would be checked")
    return selected


def run_passes(model: onnx.ModelProto, name: str, *, skip: Sequence[str] = ()) -> tuple[gs.Graph, Report]:
    """Run the selected passes, each repairing what it found, over a graphsurgeon import.

    Each pass sees fresh facts of the graph as the passes before it left it (analysed
    again after a pass that edited it, reused after one that did not).

    ``model`` itself is not touched (the import is a copy). ``check`` and ``repair`` both
    run this, so each pass sees the graph as the passes before it left it, and ``check``
    reports exactly what ``repair`` does.
    """
    try:
        graph = gs.import_onnx(model)
    except (KeyError, ValueError, TypeError, UnicodeDecodeError, gs.util.exception.OnnxGraphSurgeonException) as exc:
        # load_model refuses the damage it knows; what still breaks the importer is damage too
        raise UnusableInputError(
            f"{name}: damaged ONNX model: onnx-graphsurgeon cannot import it: {one_line(exc)}"
        ) from None
    report = Report(model=name, applied=False, skipped=[p.name for p in DEFAULT_PASSES if p.name in skip])
    facts = None  # analysed again only after a pass edited the graph
    for rewrite in select_passes(skip):
        try:
            facts = facts if facts is not None else analyze(graph)
        except MemoryError:
            raise UnusableInputError(
                f"{name}: ONNX shape inference needs more than {INFERENCE_BUDGET >> 30} GiB on this model: "
                "a damaged or absurd shape value (e.g. in a ConstantOfShape or Reshape input)"
            ) from None
        except Crashed as crash:
            raise UnusableInputError(
                f"{name}: ONNX shape inference crashed on this model ({crash}, onnx {onnx.__version__}; isolated): "
                "a damaged or unusual graph"
            ) from None
        result = rewrite.run(graph, facts, apply=True)
        log.info("%s: %d edit(s), %d declined", rewrite.name, len(result.edits), len(result.declined))
        if result.modified:
            # mode="nodes": the passes never edit local functions, and sorting them recurses
            # without end in onnx-graphsurgeon 0.6 when the graph also has subgraphs (If)
            graph.cleanup().toposort(mode="nodes")
            facts = None
        report.results.append(result)
    return graph, report


def check(model: onnx.ModelProto, name: str, *, skip: Sequence[str] = ()) -> Report:
    """Find what ``repair`` would change and prove that its result would load; ``model`` is not modified.

    Raises UnusableInputError when ONNX Runtime cannot load the model and the passes do
    not change that (the model cannot be deployed as it is, nor repaired into shape).
    """
    graph, report = run_passes(model, name, skip=skip)
    if not report.blocking:
        candidate = onnx.ModelProto()
        candidate.CopyFrom(model)  # a skeleton: large weights are references, not bytes
        _settle(candidate, graph, report, skip)
        _verify(candidate, model, name, report)
    return report


def repair(model: onnx.ModelProto, name: str, *, skip: Sequence[str] = ()) -> tuple[onnx.ModelProto, Report]:
    """Repair ``model`` in place and return it with the report.

    Raises UnrepairableError when a pass found a defect it cannot repair, and when the
    result fails ``onnx.checker`` or ONNX Runtime session creation: a repaired model
    is only returned once it is known to load. Raises UnusableInputError when ONNX
    Runtime cannot load the input itself and the repair does not change that.
    """
    original = onnx.ModelProto()
    original.CopyFrom(model)
    graph, report = run_passes(model, name, skip=skip)
    if report.blocking:  # the report stays "planned": nothing was made
        raise UnrepairableError(
            f"{name}: {report.blocking} problem(s) no pass can repair (see the report); nothing written",
            report=report,
        )
    report.applied = True
    _settle(model, graph, report, skip)
    _verify(model, original, name, report)
    return model, report


def _settle(model: onnx.ModelProto, graph: gs.Graph, report: Report, skip: Sequence[str]) -> None:
    """Put the passes' graph into ``model`` (when they edited it) and record the repair."""
    if any(r.modified for r in report.results):
        repaired = gs.export_onnx(graph, do_type_check=False)
        model.graph.CopyFrom(repaired.graph)
        for info in model.graph.value_info:
            # A shape written before the repair may be stale after it (a clamped pad is no
            # longer the traced 50), and ONNX Runtime folds Shape ops of tensors whose
            # value_info is static: keep only element types.
            info.type.tensor_type.ClearField("shape")
    _record(model, report, skip)


def _record(model: onnx.ModelProto, report: Report, skip: Sequence[str]) -> None:
    """Store tool version, passes and edits in metadata_props (an earlier repair's record
    moves into ``history``, so a second repair, 0 edits, does not erase what the first did)."""
    record: dict[str, object] = {
        **metadata.stamp(),
        "passes": [p.name for p in select_passes(skip)],
        "edits": [edit.to_dict() for edit in report.edits],
    }
    metadata.set_record(model, metadata.REPAIR, record)


def findings(report: Report) -> list[str]:
    """What ``check`` would repair or cannot repair, one line each (``validate`` fails on any)."""
    lines = [f"[{r.name}] {e.op} {e.node}: would be repaired: {e.before}" for r in report.results for e in r.edits]
    lines += [
        f"[{r.name}] {d.op} {d.node}: unrepairable: {d.reason}"
        for r in report.results
        for d in r.declined
        if d.blocking
    ]
    return lines


def _verify(model: onnx.ModelProto, original: onnx.ModelProto, name: str, report: Report) -> None:
    """The repaired model must pass the ONNX checker and load in ONNX Runtime.

    Both check the weightless twin (large weights as graph inputs of the same dtype and
    shape): session creation proves the graph, not the weights, and reads no weight.
    When the result does not load, neither may the input (an IR version or an op ORT
    does not support, a crash of ORT): that is unusable input, named with ORT's reasons
    for both and, for a float16 model, the route that loads; otherwise the repair itself
    broke the model and nothing is written.
    """
    try:
        onnx.checker.check_model(checkable(model))
    except onnx.checker.ValidationError as exc:
        raise UnrepairableError(
            f"{name}: repaired model fails onnx.checker: {one_line(exc)}; nothing written"
        ) from None
    reason = _load_reason(model, name)
    if reason is None:
        return
    cause = _load_reason(original, name)
    if cause is not None:
        after = f"; repaired ({len(report.edits)} edit(s), see the report), it still does not load: {reason}"
        route = (
            "; the route that loads: repair the float32 export (hubert-fix repair), then hubert-fix optimize --fp16"
            if graph_precision(model) == "fp16"
            else ""
        )
        raise UnusableInputError(
            f"{name}: ONNX Runtime cannot load this model: {cause}{after if reason != cause else ''}{route}",
            report=report,
        )
    raise UnrepairableError(f"{name}: repaired model fails ONNX Runtime session creation: {reason}; nothing written")


def _load_reason(model: onnx.ModelProto, name: str) -> str | None:
    """Why ONNX Runtime cannot create a session for ``model`` (its crash included), or None."""
    try:
        return load_error(weightless(model).SerializeToString(), name)
    except OrtCrash as crash:
        return str(crash).removeprefix(f"{name}: ")
