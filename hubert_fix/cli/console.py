"""Where the CLI's output goes: reports to stdout, progress and errors to stderr."""

from __future__ import annotations

import argparse
import json
import sys


class Console:
    """Where output goes: reports to stdout; progress to stderr only on a terminal, each
    line overwriting the one before (cleared before anything else is printed)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.json = getattr(args, "json", False)
        self.show_progress = not args.quiet and sys.stderr.isatty()
        self._pending = False  # a progress line is on the terminal, without its newline

    def progress(self, message: str) -> None:
        if self.show_progress:
            print(f"\r\033[Khubert-fix: {message}", end="", file=sys.stderr, flush=True)
            self._pending = True

    def done(self) -> None:
        """Clear the progress line (before a report, an error or the closing verdict)."""
        if self._pending:
            print("\r\033[K", end="", file=sys.stderr, flush=True)
            self._pending = False

    def out(self, text: str = "") -> None:
        self.done()
        print(text, flush=True)


def emit(console: Console, payload: dict[str, object], human: str) -> None:
    console.out(json.dumps(payload, indent=2, sort_keys=True) if console.json else human)
