"""Where the CLI's output goes: reports to stdout, progress and errors to stderr."""

from __future__ import annotations

import json
import sys

from hubert_fix import interrupts


class Console:
    """Where output goes: reports to stdout; progress to stderr only on a terminal, each
    line overwriting the one before (cleared before anything else is printed).

    With ``as_json`` stdout gets exactly one JSON object: the report, or the error
    (``reported`` says whether it went out already)."""

    def __init__(self, *, as_json: bool, progress: bool) -> None:
        self.json = as_json
        self.show_progress = progress and sys.stderr.isatty()
        self.reported = False  # a JSON object is on stdout
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
        """A line (or a JSON report) on stdout, never cut in two by Ctrl-C (raised once it is out)."""
        with interrupts.deferred():
            self.done()
            print(text, flush=True)

    def report(self, payload: dict[str, object]) -> None:
        """The JSON object of this run (the first one only: stdout holds one)."""
        if not self.reported:
            with interrupts.deferred():
                self.out(json.dumps(payload, indent=2, sort_keys=True))
                self.reported = True


def emit(console: Console, payload: dict[str, object], human: str) -> None:
    if console.json:
        console.report(payload)
    else:
        console.out(human)
