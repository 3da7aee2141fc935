"""What a validation found: tolerances, one result per case or check, the report."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from hubert_fix.validation.matrix import Case


@dataclass(frozen=True)
class Tolerance:
    """What parity means: every bound that is set must hold on every compared case.

    ``max_abs_diff`` is absolute; ``max_rel_diff`` is the max abs diff over the
    reference's largest magnitude (for reduced precisions, whose error scales with the
    output). The cosines: ``min_cosine`` over the whole output; per frame (each real
    frame's C-vector, frames the reference zeroes as padding left out) the mean over a
    case must reach ``min_mean_frame_cosine`` and every frame ``min_frame_cosine``.

    CTC logits: the greedy path (argmax per real frame) must be the reference's on every
    frame whose reference top-1/top-2 gap exceeds ``greedy_margin``; a gap within it is
    within the precision's own error and may flip. By default the margin is twice the
    diff bound (``max_abs_diff``, or ``max_rel_diff`` x the reference's max |value|): no
    logit may move further than that, so no clearer frame can flip. The greedy
    transcripts' token error rate (repeats merged, blanks dropped) is always reported and,
    with ``max_token_error_rate``, bounded.
    """

    max_abs_diff: float | None = None
    max_rel_diff: float | None = None
    min_cosine: float = 0.0
    min_mean_frame_cosine: float | None = None
    min_frame_cosine: float | None = None
    greedy_margin: float | None = None  # CTC: frames whose reference top-1/top-2 gap is at most this may change argmax
    max_token_error_rate: float | None = None  # CTC: greedy transcripts vs the reference's (edit distance / tokens)

    def describe(self) -> str:
        parts = [f"max abs diff <= {self.max_abs_diff:g}"] if self.max_abs_diff is not None else []
        if self.max_rel_diff is not None:
            parts.append(f"max abs diff <= {self.max_rel_diff:g} x the reference's max |value|")
        parts.append(f"cosine >= {self.min_cosine}")
        if self.min_mean_frame_cosine is not None:
            parts.append(f"mean frame cosine >= {self.min_mean_frame_cosine}")
        if self.min_frame_cosine is not None:
            parts.append(f"min frame cosine >= {self.min_frame_cosine}")
        if self.greedy_margin is not None:
            parts.append(f"CTC greedy path kept where the top-1/top-2 gap > {self.greedy_margin:g}")
        if self.max_token_error_rate is not None:
            parts.append(f"CTC token error rate <= {self.max_token_error_rate:g}")
        return ", ".join(parts)

    def margin(self, scale: float) -> float:
        """The CTC greedy margin (see the class doc) against a reference of max magnitude ``scale``:
        twice the tightest diff bound that ``diff_failure`` applies (0 without one)."""
        if self.greedy_margin is not None:
            return self.greedy_margin
        bounds = [
            b
            for b in (self.max_abs_diff, None if self.max_rel_diff is None else self.max_rel_diff * scale)
            if b is not None
        ]
        return 2 * min(bounds, default=0.0)

    def diff_failure(self, diff: float, scale: float) -> str | None:
        """Why ``diff`` (a max abs diff, against a reference of max magnitude ``scale``) is too large."""
        if self.max_abs_diff is not None and not diff <= self.max_abs_diff:
            return f"max abs diff {diff:.3g} > {self.max_abs_diff:g}"
        if self.max_rel_diff is not None and not diff <= self.max_rel_diff * scale:
            return f"max abs diff {diff:.3g} > {self.max_rel_diff:g} x {scale:.3g} (the reference's max |value|)"
        return None


# Every tolerance, in one table. Parity with PyTorch (or stored outputs), per precision
# the model computes in:
TOLERANCES = {
    "fp32": Tolerance(max_abs_diff=1e-3, min_cosine=0.9999),
    "fp16": Tolerance(max_abs_diff=5e-2, min_cosine=0.999),
    # 8-bit weights and activations: errors of about 1% of the output's range per value
    "int8": Tolerance(max_rel_diff=0.1, min_cosine=0.999, min_mean_frame_cosine=0.999, min_frame_cosine=0.99),
    # bfloat16 (OpenVINO's choice on a CPU with BF16): an 8-bit mantissa, errors on int8's scale
    "bf16": Tolerance(max_rel_diff=0.1, min_cosine=0.999, min_mean_frame_cosine=0.999, min_frame_cosine=0.99),
}
# and parity of an optimized model with the model it came from (and with PyTorch), per
# precision (``hubert-fix optimize``):
OPTIMIZED_TOLERANCES = {
    # the same arithmetic in another layout: differences are float rounding only
    "fp32": Tolerance(max_abs_diff=1e-3, min_cosine=0.9999, min_mean_frame_cosine=0.9999, min_frame_cosine=0.999),
    "int8": TOLERANCES["int8"],
    # a 10-bit mantissa: errors of about 0.1% of the output's range
    "fp16": Tolerance(max_rel_diff=0.02, min_cosine=0.9999, min_mean_frame_cosine=0.9999, min_frame_cosine=0.999),
    "bf16": TOLERANCES["bf16"],  # OpenVINO's CPU plugin (optimize --runtime openvino)
}

Reference = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (source, padding_mask) -> features
Stored = list[tuple[Case, np.ndarray, np.ndarray, np.ndarray | None]]


@dataclass(frozen=True)
class Expected:
    """What a validation compares the model's outputs with, and how its report names that.

    ``Expected()``: nothing (a case can only show that it ran); ``Expected.pytorch(f)``:
    ``f(source, padding_mask)`` gives fairseq's outputs for each case (a checkpoint);
    ``Expected.stored(cases)``: the inputs and outputs of a reference file, or with
    ``kind="model"`` another ONNX model's outputs (``optimize`` compares with its input).
    """

    kind: str = "none"
    compute: Reference | None = None
    cases: Stored | None = None

    @classmethod
    def pytorch(cls, compute: Reference) -> Expected:
        return cls("checkpoint", compute=compute)

    @classmethod
    def stored(cls, cases: Stored, *, kind: str = "stored") -> Expected:
        return cls(kind, cases=cases)


NOTHING = Expected()  # no reference: the cases run, nothing is compared

NEEDS_REFERENCE = (
    "parity with PyTorch needs a reference (--checkpoint CKPT or --reference CASES.npz); without one a "
    "case only shows that the model runs, has the right shape and finite values. The padded frames == C "
    "case is the one a misaligned Where corrupts silently: only a reference can tell"
)


@dataclass
class CaseResult:
    name: str
    batch: int
    samples: int
    ok: bool
    failures: list[str] = field(default_factory=list)
    shape: list[int] | None = None
    expected_shape: list[int | None] | None = None
    max_abs_diff: float | None = None
    cosine: float | None = None
    mean_frame_cosine: float | None = None
    min_frame_cosine: float | None = None
    greedy_path_identical: bool | None = None  # CTC logits: argmax per clear real frame, as the reference's
    greedy_unclear_frames: int | None = None  # CTC: real frames within the margin (not required to keep their argmax)
    greedy_token_error_rate: float | None = None  # CTC: edit distance of the greedy transcripts / reference tokens
    seconds: float = 0.0
    compared: bool = False  # parity with a reference was checked (or the check needs none)
    kind: str = "case"  # "case" (an input of the matrix or a stored one), or the name of a whole-model check

    @property
    def status(self) -> str:
        """PASS (checked in full), RAN (ran, nothing to compare with) or FAIL."""
        return "FAIL" if not self.ok else "PASS" if self.compared else "RAN"


@dataclass
class ValidationReport:
    model: str
    provider: str
    precision: str
    reference: str  # "none", "checkpoint", "stored", "model" (another ONNX model's outputs)
    tolerance: dict[str, float | None] | None
    cases: list[CaseResult] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # cases the model's interface rules out
    interface: dict[str, object] | None = None
    not_checked: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.cases) and all(c.ok for c in self.cases)

    def to_dict(self) -> dict[str, object]:
        data = asdict(self)
        for case, result in zip(data["cases"], self.cases):
            case["status"] = result.status
        data["ok"] = self.ok
        return data
