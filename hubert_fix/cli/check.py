"""``hubert-fix check``."""

from __future__ import annotations

import argparse
from pathlib import Path

from hubert_fix import api
from hubert_fix.cli.console import Console, emit
from hubert_fix.cli.reports import format_report
from hubert_fix.cli.tool import MODEL_HELP, Tool, add_json, add_skip
from hubert_fix.errors import EXIT_FOUND, EXIT_OK, EXIT_SKIPPED, EXIT_UNREPAIRABLE


class Check(Tool):
    """find problems and prove their repair would load; writes nothing"""

    name = "check"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_json(parser)
        add_skip(parser)
        parser.add_argument("model", type=Path, metavar="MODEL.onnx", help=MODEL_HELP)

    def run(self, args: argparse.Namespace, console: Console) -> int:
        report = api.check(args.model, skip=args.skip)
        edits = len(report.edits)
        if report.blocking:
            status = (
                f"{edits} repairable, {report.blocking} unrepairable problem(s): repair would refuse (see declined)"
            )
        elif edits:
            status = f"{edits} repairable problem(s): run hubert-fix repair {args.model} -o OUT.onnx"
        elif report.skipped:
            status = "nothing found by the passes that ran; not a clean bill: --skip left passes out"
        else:
            status = "nothing to repair"
        human = f"{args.model}: {status}\n{format_report(report)}".rstrip()
        emit(console, {**report.to_dict(), "status": status}, human)
        if report.blocking or edits:
            return EXIT_UNREPAIRABLE if report.blocking else EXIT_FOUND
        return EXIT_SKIPPED if report.skipped else EXIT_OK
