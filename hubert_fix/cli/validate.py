"""``hubert-fix validate``."""

from __future__ import annotations

import argparse
from pathlib import Path

from hubert_fix import api
from hubert_fix.analysis.interface import ROLES
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


class Validate(Tool):
    """run the model on ONNX Runtime over the cases its interface admits

    Also the static check and batch consistency. Without --checkpoint or --reference a case can only show
    that it ran (RAN), not that its numbers are right.
    """

    name = "validate"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_json(parser)
        add_checkpoint_loading(parser)
        parser.add_argument("model", type=Path, metavar="MODEL.onnx", help=MODEL_HELP)
        source = parser.add_mutually_exclusive_group()
        source.add_argument("--checkpoint", type=Path, metavar="CKPT", help="compare with fairseq's PyTorch output")
        source.add_argument("--reference", type=Path, metavar="CASES.npz", help="compare with stored inputs/outputs")
        parser.add_argument(
            "--output-layer", type=int, default=None, metavar="N", help="with --checkpoint (default: from metadata)"
        )
        parser.add_argument(
            "--final-proj",
            action="store_true",
            help="with --checkpoint: the model ends in final_proj (default: from metadata)",
        )
        parser.add_argument(
            "--device",
            choices=["auto", "cpu", "cuda"],
            default="auto",
            help="where ONNX Runtime runs: cuda only if CUDAExecutionProvider really runs (else exit 2); auto: CUDA "
            "where it works, else CPU (default)",
        )
        add_quick(parser)
        parser.add_argument(
            "--input",
            action="append",
            default=[],
            metavar="NAME=ROLE",
            help=f"say what an input is ({', '.join(ROLES)}: padding_mask True = pad, attention_mask 1 = real "
            "sample, lengths: real samples per utterance); found by dtype and rank otherwise",
        )
        parser.add_argument(
            "--junit-xml",
            type=Path,
            default=None,
            metavar="FILE",
            help="also write a JUnit XML report (one testcase per check)",
        )
        parser.add_argument(
            "--runtime",
            choices=list(RUNTIMES),
            default="onnxruntime",
            help="what runs the model: onnxruntime (default), or openvino (the [openvino] extra: its CPU plugin, in "
            "the precision it chooses on this CPU, bf16 where the CPU has it, with that precision's tolerance)",
        )
        add_speech_files(
            parser,
            "--audio",
            "run as further cases, mono at 16 kHz, in segments of at most 10 s; compared with --checkpoint when given",
        )

    def run(self, args: argparse.Namespace, console: Console) -> int:
        if args.checkpoint:
            console.progress("importing torch and fairseq (a few seconds)")
        report = api.validate(
            args.model, checkpoint=checkpoint(args), reference=args.reference, device=args.device,
            quick=args.quick, roles=parse_roles(args.input), junit_xml=args.junit_xml, progress=console.progress,
            runtime=args.runtime, audio=args.audio,
        )  # fmt: skip
        emit(console, report.to_dict(), format_validation(report))
        return EXIT_OK if report.ok else EXIT_FOUND


def parse_roles(pairs: list[str]) -> dict[str, str]:
    """``--input NAME=ROLE`` values as {name: role}; UsageError on a malformed one."""
    roles: dict[str, str] = {}
    for pair in pairs:
        name, sep, role = pair.rpartition("=")
        if not sep or not name or role not in ROLES:
            raise UsageError(f"--input {pair}: expected NAME=ROLE with ROLE one of {', '.join(ROLES)}")
        roles[name] = role
    return roles
