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

__version__ = "0.1.0"

from hubert_fix.api import check, optimize, repair, validate  # noqa: E402
from hubert_fix.errors import (  # noqa: E402
    DeviceUnavailableError,
    HubertFixError,
    MissingExtraError,
    UnrepairableError,
    UnusableInputError,
)
from hubert_fix.optimize import OptimizeReport  # noqa: E402
from hubert_fix.runner import Report  # noqa: E402
from hubert_fix.validation import CaseResult, Tolerance, ValidationReport  # noqa: E402

__all__ = [
    "CaseResult",
    "DeviceUnavailableError",
    "HubertFixError",
    "MissingExtraError",
    "OptimizeReport",
    "Report",
    "Tolerance",
    "UnrepairableError",
    "UnusableInputError",
    "ValidationReport",
    "__version__",
    "check",
    "optimize",
    "repair",
    "validate",
]
