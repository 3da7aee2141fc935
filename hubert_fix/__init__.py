"""hubert-fix: repair ONNX exports of fairseq speech encoders (HuBERT, wav2vec 2.0, ...).

The Python API (``hubert_fix.api``, re-exported here) is what the CLI runs::

    import hubert_fix

    report = hubert_fix.check("model.onnx")           # what repair would do; writes nothing
    if report.edits:
        hubert_fix.repair("model.onnx", "fixed.onnx")  # raises UnrepairableError if it cannot
    verdict = hubert_fix.validate("fixed.onnx", reference="cases.npz")
    assert verdict.ok, verdict.to_dict()
    fast = hubert_fix.optimize("fixed.onnx", "fast.onnx", precision="int8")  # writes only if it validates
    assert fast.ok, fast.to_dict()

Errors the caller can act on are ``HubertFixError`` subclasses. The repair path
(``check``/``repair``/``validate`` without a checkpoint) needs only onnx,
onnx-graphsurgeon, numpy and onnxruntime; torch and fairseq are imported lazily, by
``validate(checkpoint=...)`` and the export path alone.
"""

import importlib

from hubert_fix._version import __version__

#: Imported on first use (PEP 562), so that ``import hubert_fix.errors`` or the console
#: script's start-up does not load onnx, onnxruntime and numpy (nor, before its Ctrl-C
#: handler is in place, even the error classes).
_LAZY = {
    "check": "api", "export": "api", "optimize": "api", "repair": "api", "validate": "api",
    "Checkpoint": "exporter.reference", "OptimizeReport": "deploy.report", "Report": "runner", "ExportReport": "api",
    "CaseResult": "validation.report", "Tolerance": "validation.report", "ValidationReport": "validation.report",
    "DeviceUnavailableError": "errors", "HubertFixError": "errors", "MissingExtraError": "errors",
    "UnrepairableError": "errors", "UnusableInputError": "errors", "UsageError": "errors",
}  # fmt: skip


def __getattr__(name: str) -> object:
    if name not in _LAZY:
        raise AttributeError(f"module 'hubert_fix' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"hubert_fix.{_LAZY[name]}"), name)
    globals()[name] = value
    return value


__all__ = [
    "CaseResult",
    "Checkpoint",
    "DeviceUnavailableError",
    "ExportReport",
    "HubertFixError",
    "MissingExtraError",
    "OptimizeReport",
    "Report",
    "Tolerance",
    "UnrepairableError",
    "UnusableInputError",
    "UsageError",
    "ValidationReport",
    "__version__",
    "check",
    "export",
    "optimize",
    "repair",
    "validate",
]
