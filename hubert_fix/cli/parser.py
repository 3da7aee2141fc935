"""The command line's grammar: the top-level options, and one sub-command per tool.

Each command is a ``Tool`` in a module of its own (``check``, ``repair``, ...): its
docstring is its help, its ``add_arguments`` its options. ``TOOLS`` is the registry, in the
order ``hubert-fix --help`` lists them.
"""

from __future__ import annotations

import argparse

from hubert_fix._version import __version__
from hubert_fix.cli.check import Check
from hubert_fix.cli.demo import Demo
from hubert_fix.cli.export import Export
from hubert_fix.cli.list_passes import ListPasses
from hubert_fix.cli.optimize import Optimize
from hubert_fix.cli.repair import Repair
from hubert_fix.cli.tool import CommandLineError, Parser, Tool
from hubert_fix.cli.validate import Validate
from hubert_fix.errors import EVERY_COMMAND, EXITS

TOOLS: tuple[Tool, ...] = (Check(), Repair(), Export(), Validate(), Optimize(), Demo(), ListPasses())

#: The flag for each API argument that library errors name (``HubertFixError.text``).
FLAGS = {
    "out": "-o", "in_place": "--in-place", "skip": "--skip", "checkpoint": "--checkpoint", "reference": "--reference",
    "trust_checkpoint": "--trust-checkpoint", "dict_dir": "--dict-dir", "output_layer": "--output-layer",
    "final_proj": "--final-proj", "opset": "--opset", "fp16": "--fp16", "device": "--device", "roles": "--input",
    "precision": "--int8/--fp16/--bf16", "precision=int8": "--int8", "precision=fp16": "--fp16",
    "precision=bf16": "--bf16", "runtime": "--runtime", "audio": "--audio",
    "calibration_audio": "--calibration-audio",
}  # fmt: skip

__all__ = ["FLAGS", "TOOLS", "CommandLineError", "build_parser"]


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
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for tool in TOOLS:
        p = sub.add_parser(tool.name, parents=[common], help=tool.summary(), description=tool.description())
        tool.add_arguments(p)
        p.set_defaults(tool=tool)
    return parser
