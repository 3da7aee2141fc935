"""The ``hubert-fix`` command line: a shell over the Python API (``hubert_fix.api``).

Reports go to stdout (--json: one JSON object, with "error" and "exit_code" when it failed);
logs, progress and errors go to stderr. The exit codes are ``hubert_fix.errors.EXITS``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time

from onnx_graphsurgeon.logger import G_LOGGER

from hubert_fix import runner
from hubert_fix._version import __version__
from hubert_fix.cli.console import Console, emit
from hubert_fix.cli.parser import FLAGS, build_parser
from hubert_fix.cli.reports import format_report
from hubert_fix.errors import EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_OK, EXIT_SIGPIPE, HubertFixError, one_line


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
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO if args.verbose else logging.WARNING,
        format="hubert-fix: %(levelname)s: %(message)s",
    )
    G_LOGGER.severity = G_LOGGER.WARNING if args.verbose else G_LOGGER.ERROR  # its warnings are not ours to print
    console = Console(args)
    start = time.perf_counter()
    try:
        code = args.func(args, console)
    except HubertFixError as exc:
        if isinstance(exc.report, runner.Report):  # what was found before giving up
            payload = {**exc.report.to_dict(), "error": exc.text(FLAGS), "exit_code": exc.exit_code}
            emit(console, payload, f"not repaired:\n{format_report(exc.report)}")
        elif console.json:  # a pipeline that keeps the JSON gets the reason there too
            console.out(json.dumps({"error": exc.text(FLAGS), "exit_code": exc.exit_code}, indent=2, sort_keys=True))
        console.done()
        print(f"hubert-fix {args.command}: error: {exc.text(FLAGS)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        console.done()
        print(f"hubert-fix {args.command}: interrupted; nothing written", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader of stdout went away (`| head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_SIGPIPE
    except Exception as exc:  # a failure the code did not anticipate: never read as a verdict (0 or 1)
        console.done()
        line = f"hubert-fix {args.command}: internal error on {_subject(args)}: {_internal_report(args, exc)}"
        if console.json:
            console.out(json.dumps({"error": line, "exit_code": EXIT_INTERNAL}, indent=2, sort_keys=True))
        print(line, file=sys.stderr)
        return EXIT_INTERNAL
    console.done()
    if console.show_progress:
        verdict = "PASSED" if code == EXIT_OK else "FOUND" if args.command == "check" else "FAILED"
        print(f"{verdict} | {time.perf_counter() - start:.1f}s | hubert-fix {args.command}", file=sys.stderr)
    return code
