"""What ``optimize`` did: its steps, its validations, and the record the written model keeps."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import onnxruntime as ort

from hubert_fix import metadata
from hubert_fix.onnxio.openvino import require_openvino
from hubert_fix.onnxio.runtimes import ONNXRUNTIME, OPENVINO
from hubert_fix.validation.report import Tolerance, ValidationReport


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


def record(report: OptimizeReport, tol: Tolerance) -> dict[str, object]:
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
