"""``hubert-fix repair``."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from hubert_fix import api
from hubert_fix.cli.console import Console, emit
from hubert_fix.cli.reports import format_report
from hubert_fix.cli.tool import MODEL_HELP, Tool, add_json, add_skip
from hubert_fix.errors import EXIT_OK, EXIT_SKIPPED, UsageError


class Repair(Tool):
    """write a repaired copy of MODEL

    OUT is written atomically and only once the repair is verified.
    """

    name = "repair"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_json(parser)
        add_skip(parser)
        parser.add_argument("model", type=Path, metavar="MODEL.onnx", help=MODEL_HELP)
        parser.add_argument(
            "-o", "--output", type=Path, metavar="OUT.onnx", help="where to write the repaired model (not MODEL)"
        )
        parser.add_argument(
            "--in-place", action="store_true", help="replace MODEL itself (-o may be left out); only once verified"
        )

    def run(self, args: argparse.Namespace, console: Console) -> int:
        if args.output is None and not args.in_place:
            raise UsageError(f"{args.model}: give -o OUT.onnx, or --in-place to replace the model")
        if args.in_place and args.output is not None and os.path.abspath(args.output) != os.path.abspath(args.model):
            raise UsageError(
                f"{args.model}: --in-place replaces MODEL, -o {args.output} names another file: give one of them"
            )
        out = args.output if args.output is not None else args.model
        report = api.repair(args.model, out, skip=args.skip, in_place=args.in_place)
        status = f"{len(report.edits)} edit(s), wrote {out}"
        if report.skipped:
            status += f"; not run: {', '.join(report.skipped)} (--skip): it may still need them"
        payload = {**report.to_dict(), "output": str(out), "status": status}
        emit(console, payload, f"{args.model}: {status}\n{format_report(report)}".rstrip())
        return EXIT_SKIPPED if report.skipped else EXIT_OK
