"""``hubert-fix passes``."""

from __future__ import annotations

import argparse
import re

from hubert_fix.cli.console import Console, emit
from hubert_fix.cli.tool import Tool, add_json
from hubert_fix.errors import EXIT_OK
from hubert_fix.passes import DEFAULT_PASSES


class ListPasses(Tool):
    """list the rewrite passes, in the order they run

    Names for --skip.
    """

    name = "passes"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_json(parser)

    def run(self, args: argparse.Namespace, console: Console) -> int:
        # the docstrings' reST ``literal`` as 'literal' on a terminal
        rows = [
            {"name": p.name, "summary": re.sub(r"``(.+?)``", r"'\1'", (type(p).__doc__ or "").strip().splitlines()[0])}
            for p in DEFAULT_PASSES
        ]
        emit(console, {"passes": rows}, "\n".join(f"{r['name']:<18} {r['summary']}" for r in rows))
        return EXIT_OK
