"""``hubert-fix optimize``."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from hubert_fix import api
from hubert_fix.cli.console import Console, emit
from hubert_fix.cli.reports import format_validation
from hubert_fix.cli.tool import (
    MODEL_HELP,
    Tool,
    add_checkpoint_loading,
    add_json,
    add_quick,
    add_speech_files,
    checkpoint,
)
from hubert_fix.errors import EXIT_FOUND, EXIT_OK, UsageError
from hubert_fix.onnxio.runtimes import RUNTIMES
from hubert_fix.validation.report import OPTIMIZED_TOLERANCES, Tolerance


class Optimize(Tool):
    """write a faster copy of MODEL for deployment, validated before it is written

    Always the fp32 rewrites that measured faster; --int8: int8 weights for CPU; --fp16: float16 for GPUs
    (inputs and outputs stay float32); --runtime openvino: OpenVINO IR. The candidate is compared with MODEL's
    own outputs (and fairseq's with --checkpoint) over the matrix within the precision's tolerance.
    """

    name = "optimize"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_json(parser)
        add_checkpoint_loading(parser)
        parser.add_argument(
            "model", type=Path, metavar="MODEL.onnx", help=MODEL_HELP + "; repaired (check finds nothing)"
        )
        parser.add_argument(
            "-o",
            "--output",
            type=Path,
            required=True,
            metavar="OUT.onnx",
            help="where to write the optimized model (OUT.xml, its weights in OUT.bin, with --runtime openvino)",
        )
        precision = parser.add_mutually_exclusive_group()
        precision.add_argument(
            "--fp32",
            action="store_true",
            help="float32 (ONNX Runtime's default; with --runtime openvino: an fp32 IR on every CPU, validated with "
            "INFERENCE_PRECISION_HINT=f32, which the report says to pass to compile_model)",
        )
        precision.add_argument(
            "--int8",
            action="store_true",
            help="int8 for CPU: int8 weights and dynamically quantized MatMuls (ONNX Runtime), static int8 "
            "calibrated on --calibration-audio (OpenVINO)",
        )
        precision.add_argument("--fp16", action="store_true", help="float16 compute, normalizations in float32 (GPU)")
        precision.add_argument(
            "--bf16", action="store_true", help="with --runtime openvino: bfloat16 (refused on a CPU without it)"
        )
        parser.add_argument(
            "--runtime",
            choices=list(RUNTIMES),
            default="onnxruntime",
            help="onnxruntime (default: OUT.onnx), or openvino (the [openvino] extra): OpenVINO IR OUT.xml + "
            "OUT.bin, validated on its CPU plugin; by default in the fastest float precision of this CPU (bf16 "
            "where it has it, fp32 where bf16 misses its tolerance); --int8: static, calibrated on "
            "--calibration-audio",
        )
        add_speech_files(
            parser,
            "--calibration-audio",
            "OpenVINO's --int8 is calibrated on them; every precision is also validated on them",
        )
        parser.add_argument(
            "--checkpoint", type=Path, metavar="CKPT", help="also compare with fairseq's PyTorch output"
        )
        parser.add_argument(
            "--device",
            choices=["auto", "cpu", "cuda"],
            default="auto",
            help="where the candidate is validated (int8: always cpu; default auto: CUDA where it really runs)",
        )
        add_quick(parser)
        parser.add_argument(
            "--tolerance",
            action="append",
            default=[],
            metavar="NAME=VALUE",
            help="override one bound of the precision's tolerance "
            f"({', '.join(f.name for f in dataclasses.fields(Tolerance))})",
        )

    def run(self, args: argparse.Namespace, console: Console) -> int:
        flags = {"fp32": args.fp32, "int8": args.int8, "fp16": args.fp16, "bf16": args.bf16}
        precision = next((name for name, given in flags.items() if given), None)
        default = OPTIMIZED_TOLERANCES[precision or "fp32"]  # OpenVINO's default: bf16's, set after the CPU is asked
        if args.tolerance and precision is None and args.runtime == "openvino":
            raise UsageError("--tolerance with --runtime openvino: name the precision too (--fp32, --bf16 or --int8)")
        tolerance = parse_tolerance(args.tolerance, default) if args.tolerance else None
        if args.checkpoint:
            console.progress("importing torch and fairseq (a few seconds)")
        report = api.optimize(
            args.model, args.output, precision=precision, runtime=args.runtime,
            calibration_audio=args.calibration_audio, checkpoint=checkpoint(args), tolerance=tolerance,
            device=args.device, quick=args.quick, progress=console.progress,
        )  # fmt: skip
        precision = report.precision
        steps = ", ".join(f"{s.name} x{s.count}" for s in report.steps)
        human = [f"optimize {args.model} ({precision}): {steps}"]
        human += [format_validation(v) for v in (report.validation, report.checkpoint_validation) if v is not None]
        human += [f"left out: {why}" for why in report.dropped]
        if report.ok:
            size = (
                f"{report.output_bytes / 1e6:.1f} MB, {report.output_bytes / report.input_bytes:.2f}x the input's "
                f"{report.input_bytes / 1e6:.1f} MB"
            )
            status = (
                f"wrote {args.output} ({size}; rewrite {report.rewrite_seconds:.1f} s, validation "
                f"{report.validate_seconds:.1f} s)"
            )
            if report.openvino_config:
                status += f"; compile it with {report.openvino_config} to compute as validated"
        else:
            status = f"{precision} candidate missed its tolerance; nothing written"
        emit(console, {**report.to_dict(), "status": status}, "\n".join([*human, status]))
        return EXIT_OK if report.ok else EXIT_FOUND


def parse_tolerance(pairs: list[str], default: Tolerance) -> Tolerance:
    """``NAME=VALUE`` overrides of a tolerance's bounds (UsageError on a bad one)."""
    names = {f.name for f in dataclasses.fields(Tolerance)}
    changes: dict[str, float] = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        try:
            if key not in names:
                raise ValueError
            changes[key] = float(value)
        except ValueError:
            raise UsageError(
                f"--tolerance {pair!r}: expected NAME=NUMBER with NAME one of {', '.join(sorted(names))}"
            ) from None
    return dataclasses.replace(default, **changes)
