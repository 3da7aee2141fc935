"""``main``: the command line parsed, the command run, and how it ended told once.

Reports go to stdout (after --json: one JSON object however the command ends, with "error"
and "exit_code" when it failed, was interrupted or its command line was wrong); logs,
progress and errors go to stderr. The exit codes are ``hubert_fix.errors.EXITS``; Ctrl-C is
130 whatever became of it on its way (``hubert_fix.interrupts``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

from onnx_graphsurgeon.logger import G_LOGGER

from hubert_fix import interrupts, runner
from hubert_fix._version import __version__
from hubert_fix.cli.console import Console, emit
from hubert_fix.cli.parser import FLAGS, CommandLineError, build_parser
from hubert_fix.cli.reports import format_report
from hubert_fix.errors import (
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_SIGPIPE,
    EXIT_SKIPPED,
    INTERRUPTED,
    HubertFixError,
    UnrepairableError,
    UsageError,
    one_line,
)


def _subject(args: argparse.Namespace) -> str:
    """The file a command works on, for the internal-error line."""
    for key in ("model", "checkpoint", "out_dir"):
        if getattr(args, key, None) is not None:
            return str(getattr(args, key))
    return "(no file)"


def _internal_report(args: argparse.Namespace, exc: Exception) -> str:
    """Write the traceback (and versions) to a report file; the rest of the error line."""
    import platform
    import traceback

    summary = f"{type(exc).__name__}: {one_line(exc, 160)}"
    text = (
        f"hubert-fix {__version__} {args.command} {_subject(args)}\n"
        f"python {platform.python_version()} on {platform.platform()}\n\n"
        + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    )
    try:
        fd, where = tempfile.mkstemp(prefix="hubert-fix-internal-error-", suffix=".txt")
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
    except OSError as err:
        return f"{summary} (no report written: {err.strerror}); not a verdict on the model; please report this bug"
    return f"{summary}; traceback in {where}; not a verdict on the model; please report this bug"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    console, prog = Console(as_json="--json" in argv, progress=False), "hubert-fix"
    try:
        args = build_parser().parse_args(argv)
        console, prog = Console(as_json=getattr(args, "json", False), progress=not args.quiet), f"{prog} {args.command}"
        logging.basicConfig(
            stream=sys.stderr,
            level=logging.INFO if args.verbose else logging.WARNING,
            format="hubert-fix: %(levelname)s: %(message)s",
        )
        G_LOGGER.severity = G_LOGGER.WARNING if args.verbose else G_LOGGER.ERROR  # its warnings are not ours
        return _run(args, console)
    except CommandLineError as exc:  # the parser's: argparse's own usage errors
        return _tell(console, exc.exit_code, f"{exc.prog}: usage error", str(exc))
    except KeyboardInterrupt:  # from the command, or at a moment no closer handler covers
        return _tell(console, EXIT_INTERRUPTED, prog, INTERRUPTED)
    except BrokenPipeError:  # the reader of stdout went away (`| head`): stop quietly
        _stdout_gone()
        return EXIT_SIGPIPE


def _stdout_gone() -> None:
    """Point stdout at /dev/null, so that the interpreter's last flush does not fail again."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _run(args: argparse.Namespace, console: Console) -> int:
    """The command, and how it ended told once: its report, or the error on stdout (one JSON
    object with --json) and one line on stderr. An interrupt is 130 however it surfaced."""
    started = time.perf_counter()
    try:
        code = args.tool.run(args, console)
    except HubertFixError as exc:
        if interrupts.received():  # e.g. ONNX Runtime's ImportError for an interrupt in its import
            raise KeyboardInterrupt from None
        payload = {"error": exc.text(FLAGS), "exit_code": exc.exit_code}
        if isinstance(exc.report, runner.Report):  # what was found before giving up
            headline = (
                "needs repair first; check finds:"
                if args.command == "optimize"
                else "refused, nothing written:"
                if isinstance(exc, UnrepairableError)
                else "what the passes found:"
            )
            emit(console, {**exc.report.to_dict(), **payload}, f"{headline}\n{format_report(exc.report)}")
        kind = "usage error" if isinstance(exc, UsageError) else "error"
        return _tell(console, exc.exit_code, f"hubert-fix {args.command}: {kind}", exc.text(FLAGS))
    except BrokenPipeError:  # no failure of ours: main answers 141
        raise
    except Exception as exc:  # a failure the code did not anticipate: never read as a verdict (0 or 1)
        if interrupts.received():
            raise KeyboardInterrupt from None
        error = f"internal error on {_subject(args)}: {_internal_report(args, exc)}"
        return _tell(console, EXIT_INTERNAL, f"hubert-fix {args.command}", error)
    if interrupts.received():  # swallowed on its way (a finalizer, a library): the run is not a verdict
        error = "interrupted while it ran (the run went on): what it printed is not a verdict"
        return _tell(console, EXIT_INTERRUPTED, f"hubert-fix {args.command}", error)
    if console.show_progress:
        with interrupts.deferred(raise_after=False):
            console.done()
            verdict = (
                "PASSED"
                if code == EXIT_OK
                else "INCOMPLETE"
                if code == EXIT_SKIPPED
                else "FOUND"
                if args.command == "check"
                else "FAILED"
            )
            print(f"{verdict} | {_since_start(started):.1f}s | hubert-fix {args.command}", file=sys.stderr)
    return code


def _tell(console: Console, code: int, prefix: str, error: str) -> int:
    """An error's answer: ``prefix: error`` on stderr, one line, and with --json the error
    object on stdout (unless the report went out already). Not cut short by another Ctrl-C."""
    with interrupts.deferred(raise_after=False):
        console.done()
        if console.json:
            try:
                console.report({"error": error, "exit_code": code})
            except BrokenPipeError:  # stdout is gone: the line on stderr still says it
                _stdout_gone()
        print(f"{prefix}: {error}", file=sys.stderr)
    return code


def _since_start(started: float) -> float:
    """Seconds since this process started, interpreter start-up and imports included (Linux:
    its start time in /proc); elsewhere since ``started`` (``time.perf_counter()``)."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        return time.clock_gettime(time.CLOCK_BOOTTIME) - int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, AttributeError, IndexError, ValueError):
        return time.perf_counter() - started
