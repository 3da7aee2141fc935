"""The command line's grammar and help texts."""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path
from typing import NoReturn

from hubert_fix._version import __version__
from hubert_fix.analysis.interface import ROLES
from hubert_fix.cli.commands import cmd_check, cmd_demo, cmd_export, cmd_optimize, cmd_passes, cmd_repair, cmd_validate
from hubert_fix.errors import EVERY_COMMAND, EXIT_INTERNAL, EXIT_USAGE, EXITS, UsageError
from hubert_fix.validation.report import Tolerance

log = logging.getLogger("hubert_fix")


class CommandLineError(UsageError):
    """argparse's usage error, with the command (``prog``) whose grammar it broke."""

    def __init__(self, message: str, prog: str) -> None:
        super().__init__(message)
        self.prog = prog


class Parser(argparse.ArgumentParser):
    """argparse whose usage errors are CommandLineError (exit 64, one line) instead of exit 2,
    the code of unusable input; options are spelled in full (no abbreviations)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, allow_abbrev=False, **kwargs)  # type: ignore[arg-type]

    def error(self, message: str) -> NoReturn:
        raise CommandLineError(f"{message} (see {self.prog} --help)", self.prog)


def _options(*, top: bool) -> argparse.ArgumentParser:
    """-q/-v, accepted before the command and after it. After it they only add to what
    came before (their default is "not given"), so ``hubert-fix -v check M`` and
    ``hubert-fix check -v M`` both log."""
    options = argparse.ArgumentParser(add_help=False)
    default: dict[str, object] = {"default": False} if top else {"default": argparse.SUPPRESS}
    options.add_argument(
        "-q", "--quiet", action="store_true",
        help="no progress line and no closing PASSED/FAILED line on stderr (both appear only on a terminal; reports "
        "and errors are printed either way)", **default,
    )  # fmt: skip
    options.add_argument("-v", "--verbose", action="store_true", help="log details to stderr", **default)
    return options


#: The flag for each API argument that library errors name (``HubertFixError.text``).
FLAGS = {
    "out": "-o", "in_place": "--in-place", "skip": "--skip", "checkpoint": "--checkpoint", "reference": "--reference",
    "trust_checkpoint": "--trust-checkpoint", "dict_dir": "--dict-dir", "output_layer": "--output-layer",
    "final_proj": "--final-proj", "opset": "--opset", "fp16": "--fp16", "device": "--device", "roles": "--input",
    "precision": "--int8/--fp16/--bf16", "precision=int8": "--int8", "precision=fp16": "--fp16",
    "precision=bf16": "--bf16", "runtime": "--runtime", "audio": "--audio",
    "calibration_audio": "--calibration-audio",
}  # fmt: skip


def _files(p: argparse.ArgumentParser, flag: str, what: str) -> None:
    """An option taking a speech file, repeated for more: one file per flag, so that a list
    never swallows the MODEL that follows it (``--audio a.wav MODEL.onnx``)."""
    help = f"a speech file (WAV, FLAC, OGG; the [audio] extra), repeat {flag} for more: {what}"
    p.add_argument(flag, action="append", default=[], type=Path, metavar="FILE", help=help)


def _epilog() -> str:
    """Every command's exit codes, from ``errors.EXITS``."""
    lines = ["Exit codes (stable; pipelines depend on them):"]
    for name, codes in EXITS.items():
        lines.append(f"  {name}: " + "; ".join(f"{code} {meaning}" for code, meaning in codes.items()))
    lines.append("  every command: " + "; ".join(f"{code} {meaning}" for code, meaning in EVERY_COMMAND.items()))
    lines.append(
        'Reports go to stdout (after --json: one JSON object however the command ends, with "error" and '
        '"exit_code" when it failed, was interrupted or its command line was wrong); logs, progress and errors go '
        "to stderr."
    )
    return "\n".join(lines)


MODEL_HELP = "the ONNX model (a file; its external data files, if any, beside it)"


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="hubert-fix",
        description="Repair ONNX exports of fairseq speech encoders (HuBERT, wav2vec 2.0, ...) and of other "
        "exporters' speech models with the same defects.",
        epilog=_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[_options(top=True)],
    )
    parser.add_argument("--version", action="version", version=f"hubert-fix {__version__}")
    common = _options(top=False)
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    skip = argparse.ArgumentParser(add_help=False)
    skip.add_argument(
        "--skip", action="append", default=[], metavar="PASS", help="leave out a pass (see: hubert-fix passes)"
    )
    trust = argparse.ArgumentParser(add_help=False)
    trust.add_argument(
        "--trust-checkpoint",
        action="store_true",
        help="unpickle the checkpoint without torch's weights_only allowlist (only for files you trust)",
    )
    trust.add_argument(
        "--dict-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="a CTC fine-tune that does not carry its vocabulary: the folder holding its dict.ltr.txt",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(
        name: str, summary: str, description: str, parents: list[argparse.ArgumentParser]
    ) -> argparse.ArgumentParser:
        exits = "; ".join(f"{code}: {meaning}" for code, meaning in EXITS[name].items())
        description = (
            f"{summary}. {description} Exit {exits}; {EXIT_INTERNAL}: internal error; {EXIT_USAGE}: usage error."
        )
        description = description.replace(". . ", ". ")
        return sub.add_parser(name, parents=[common, *parents], help=summary, description=description)

    p = command(
        "check",
        "find problems and prove their repair would load; writes nothing",
        "",
        [as_json, skip],
    )
    p.add_argument("model", type=Path, metavar="MODEL.onnx", help=MODEL_HELP)
    p.set_defaults(func=cmd_check)

    p = command(
        "repair",
        "write a repaired copy of MODEL",
        "OUT is written atomically and only once the repair is verified.",
        [as_json, skip],
    )
    p.add_argument("model", type=Path, metavar="MODEL.onnx", help=MODEL_HELP)
    p.add_argument(
        "-o", "--output", type=Path, metavar="OUT.onnx", help="where to write the repaired model (not MODEL)"
    )
    p.add_argument(
        "--in-place", action="store_true", help="replace MODEL itself (-o may be left out); only once verified"
    )
    p.set_defaults(func=cmd_repair)

    p = command(
        "export",
        "export a fairseq checkpoint as-is, repair, validate",
        "Needs the [export] extra (torch, fairseq).",
        [as_json, trust],
    )
    p.add_argument(
        "checkpoint",
        type=Path,
        metavar="CHECKPOINT.pt",
        help="a fairseq checkpoint (HuBERT, wav2vec 2.0, ...; or a wav2vec_ctc/hubert_ctc fine-tune: logits are exported)",
    )
    p.add_argument("-o", "--output", type=Path, required=True, metavar="OUT.onnx", help="where to write the model")
    p.add_argument(
        "--output-layer", type=int, default=None, metavar="N", help="1-based transformer layer (default: last)"
    )
    p.add_argument(
        "--opset",
        type=int,
        default=17,
        metavar="N",
        help="ONNX opset, 11 to 20 (default 17; the encoder needs dynamic Slice inputs, from 11)",
    )
    p.add_argument("--fp16", action="store_true", help="half precision (model.half(); traced on --device, CPU works)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="device to trace on (default cpu)")
    p.add_argument("--raw", action="store_true", help="write the unrepaired export, skip repair and validation")
    p.add_argument(
        "--final-proj",
        action="store_true",
        help="apply the model's final_proj after the features (ContentVec as RVC v1 / so-vits-svc 4.0 use it)",
    )
    p.set_defaults(func=cmd_export)

    p = command(
        "validate",
        "run the model on ONNX Runtime over the cases its interface admits",
        "Also the static check and batch consistency. Without --checkpoint or --reference a case can only show "
        "that it ran (RAN), not that its numbers are right.",
        [as_json, trust],
    )
    p.add_argument("model", type=Path, metavar="MODEL.onnx", help=MODEL_HELP)
    source = p.add_mutually_exclusive_group()
    source.add_argument("--checkpoint", type=Path, metavar="CKPT", help="compare with fairseq's PyTorch output")
    source.add_argument("--reference", type=Path, metavar="CASES.npz", help="compare with stored inputs/outputs")
    p.add_argument(
        "--output-layer", type=int, default=None, metavar="N", help="with --checkpoint (default: from metadata)"
    )
    p.add_argument(
        "--final-proj",
        action="store_true",
        help="with --checkpoint: the model ends in final_proj (default: from metadata)",
    )
    p.add_argument(
        "--device",
        choices=["auto", "cpu", "cuda"],
        default="auto",
        help="where ONNX Runtime runs: cuda only if CUDAExecutionProvider really runs (else exit 2); auto: CUDA "
        "where it works, else CPU (default)",
    )
    p.add_argument("--quick", action="store_true", help="leave out the 10 s input")
    p.add_argument(
        "--input",
        action="append",
        default=[],
        metavar="NAME=ROLE",
        help=f"say what an input is ({', '.join(ROLES)}: padding_mask True = pad, attention_mask 1 = real sample, lengths: real samples per utterance); "
        "found by dtype and rank otherwise",
    )
    p.add_argument(
        "--junit-xml",
        type=Path,
        default=None,
        metavar="FILE",
        help="also write a JUnit XML report (one testcase per check)",
    )
    p.add_argument(
        "--runtime",
        choices=["onnxruntime", "openvino"],
        default="onnxruntime",
        help="what runs the model: onnxruntime (default), or openvino (the [openvino] extra: its CPU plugin, in the "
        "precision it chooses on this CPU, bf16 where the CPU has it, with that precision's tolerance)",
    )
    _files(
        p,
        "--audio",
        "run as further cases, mono at 16 kHz, in segments of at most 10 s; compared with --checkpoint when given",
    )
    p.set_defaults(func=cmd_validate)

    p = command(
        "optimize",
        "write a faster copy of MODEL for deployment, validated before it is written",
        "Always the fp32 rewrites that measured faster; --int8: int8 weights for CPU; --fp16: float16 for GPUs "
        "(inputs and outputs stay float32); --runtime openvino: OpenVINO IR. The candidate is compared with MODEL's own outputs (and fairseq's "
        "with --checkpoint) over the matrix within the precision's tolerance.",
        [as_json, trust],
    )
    p.add_argument("model", type=Path, metavar="MODEL.onnx", help=MODEL_HELP + "; repaired (check finds nothing)")
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        required=True,
        metavar="OUT.onnx",
        help="where to write the optimized model (OUT.xml, its weights in OUT.bin, with --runtime openvino)",
    )
    precision = p.add_mutually_exclusive_group()
    precision.add_argument(
        "--int8",
        action="store_true",
        help="int8 for CPU: int8 weights and dynamically quantized MatMuls (ONNX Runtime), static int8 calibrated "
        "on --calibration-audio (OpenVINO)",
    )
    precision.add_argument("--fp16", action="store_true", help="float16 compute, normalizations in float32 (GPU)")
    precision.add_argument(
        "--bf16", action="store_true", help="with --runtime openvino: bfloat16 (refused on a CPU without it)"
    )
    p.add_argument(
        "--runtime",
        choices=["onnxruntime", "openvino"],
        default="onnxruntime",
        help="onnxruntime (default: OUT.onnx), or openvino (the [openvino] extra): OpenVINO IR OUT.xml + OUT.bin, "
        "validated on its CPU plugin; by default in the fastest float precision of this CPU (bf16 where it has "
        "it); --int8: static, calibrated on --calibration-audio",
    )
    _files(
        p, "--calibration-audio", "OpenVINO's --int8 is calibrated on them; every precision is also validated on them"
    )
    p.add_argument("--checkpoint", type=Path, metavar="CKPT", help="also compare with fairseq's PyTorch output")
    p.add_argument(
        "--device",
        choices=["auto", "cpu", "cuda"],
        default="auto",
        help="where the candidate is validated (int8: always cpu; default auto: CUDA where it really runs)",
    )
    p.add_argument("--quick", action="store_true", help="leave out the 10 s input")
    p.add_argument(
        "--tolerance",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help=f"override one bound of the precision's tolerance ({', '.join(f.name for f in dataclasses.fields(Tolerance))})",
    )
    p.set_defaults(func=cmd_optimize)

    p = command(
        "demo",
        "the whole job on the embedded tiny HuBERT checkpoint",
        "Every step is printed as the command that does it. Needs the [export] extra.",
        [],
    )
    p.add_argument(
        "--out-dir", type=Path, default=Path("hubert-fix-demo"), metavar="DIR", help="default ./hubert-fix-demo"
    )
    p.set_defaults(func=cmd_demo)

    p = command("passes", "list the rewrite passes, in the order they run", "Names for --skip.", [as_json])
    p.set_defaults(func=cmd_passes)
    return parser
