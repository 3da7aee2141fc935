"""What ``optimize`` is asked for, checked before any work: the precision on the runtime (a contradiction is
exit 64, what this CPU cannot do exit 2) and a model fit to be optimized (exit 3: repair it first)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from hubert_fix import metadata, runner
from hubert_fix.deploy import openvino_ir
from hubert_fix.errors import DeviceUnavailableError, UnrepairableError, UnusableInputError, UsageError, argument
from hubert_fix.onnxio.reading import ModelFile
from hubert_fix.onnxio.runtimes import ONNXRUNTIME, OPENVINO, known

PRECISIONS = ("fp32", "int8", "fp16")


def checked_precision(precision: str | None, runtime: str, out: Path, device: str, audio: Sequence[Path]) -> str:
    """The precision to write (refusing a contradictory request, exit 64, and what this CPU cannot do, exit 2)."""
    if runtime == ONNXRUNTIME:
        if precision == "bf16":
            raise UsageError(
                f"{argument('precision', 'bf16')}: ONNX Runtime has no bfloat16 kernels on x86 CPUs; "
                f"bf16 is for {argument('runtime', OPENVINO)}"
            )
        if precision not in (None, *PRECISIONS):
            raise UsageError(f"{argument('precision', precision)}: unknown precision (one of {', '.join(PRECISIONS)})")
        return precision or "fp32"
    known(runtime)
    if precision == "fp16":
        raise UsageError(
            f"{argument('precision', 'fp16')}: OpenVINO's CPU plugin computes in bf16 or fp32; fp16 is for "
            f"{argument('runtime', ONNXRUNTIME)} on GPUs"
        )
    if device == "cuda":
        raise DeviceUnavailableError(f"{argument('runtime', OPENVINO)} targets OpenVINO's CPU plugin, not CUDA")
    if out.suffix != ".xml":
        raise UnusableInputError(f"{out}: an OpenVINO model is written as OUT.xml (its weights in OUT.bin beside it)")
    chosen = openvino_ir.choose(precision)
    if chosen == "int8" and not audio:
        raise UsageError(
            f"{argument('precision', 'int8')} on OpenVINO is static quantization: give speech to calibrate it on, "
            f"{argument('calibration_audio')} (a few files of the kind the model will hear)"
        )
    return chosen


def refuse_unfit(loaded: ModelFile, name: str, precision: str) -> None:
    """A model to repair first (exit 3), or one already reduced to another precision (exit 2)."""
    meta = metadata.read(loaded.proto)
    earlier = meta.get(metadata.OPTIMIZE)
    if earlier is not None:
        try:
            done = json.loads(earlier).get("precision")
        except (ValueError, AttributeError):
            done = "unknown"
        if done not in ("fp32", precision):
            raise UnusableInputError(
                f"{name}: already optimized for {done}; optimize the fp32 model it came from for {precision}"
            )
    if precision == "int8" and meta.get(metadata.PRECISION) == "fp16":
        raise UnusableInputError(
            f"{name}: an fp16 export; int8 weights are made from an fp32 model (export without {argument('fp16', True)})"
        )
    found = runner.check(loaded.proto, name)
    if found.edits or found.blocking:
        raise UnrepairableError(
            f"{name}: has {len(found.edits)} problem(s) to repair and {found.blocking} unrepairable one(s); "
            f"optimize validates against this model, so repair it first: hubert-fix repair {name} -o REPAIRED.onnx",
            report=found,
        )
