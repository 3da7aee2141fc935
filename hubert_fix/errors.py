"""One error base class; every user-facing failure is a HubertFixError.

The CLI prints ``str(error)`` as one line on stderr and exits with ``error.exit_code``.
Anything that is not a HubertFixError is a failure the code did not anticipate: the CLI
exits with EXIT_INTERNAL (never 0 or 1, which are verdicts), one line on stderr, and
writes the traceback to a report file; the API lets it propagate unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from hubert_fix._version import __version__

EXIT_OK = 0
EXIT_FOUND = 1  # check: repairable problems found; validate: a check failed
EXIT_UNUSABLE = 2  # unusable input (file, checkpoint, device)
EXIT_UNREPAIRABLE = 3  # check/repair: problems that no pass can repair
EXIT_INTERNAL = 4  # a failure of hubert-fix itself (a bug): not a verdict
EXIT_SKIPPED = 5  # check/repair with --skip: what ran found nothing it could not handle, but passes did not run
EXIT_USAGE = 64  # the command line is wrong: an unknown flag, a missing or malformed argument (sysexits' EX_USAGE)
EXIT_INTERRUPTED = 130  # Ctrl-C (the shell's code for SIGINT)
EXIT_SIGPIPE = 141  # the reader of stdout went away (the shell's code for SIGPIPE)

INTERRUPTED = "interrupted; nothing written"  # what an interrupt before any output says (stderr; --json: "error")

#: What each command's exit codes mean (stable: pipelines depend on them). The CLI's
#: help is written from this table; ``EVERY_COMMAND`` holds the codes all commands share.
EXITS: dict[str, dict[int, str]] = {
    "check": {
        EXIT_OK: "nothing to repair",
        EXIT_FOUND: "repairable problems found (run repair)",
        EXIT_UNUSABLE: "unusable input",
        EXIT_UNREPAIRABLE: "a problem no pass can repair, or a repair that would not load (repair would refuse)",
        EXIT_SKIPPED: "the passes that ran found nothing to repair, but --skip left passes out: not a clean bill",
    },
    "repair": {
        EXIT_OK: "OUT written",
        EXIT_UNUSABLE: "unusable input or output",
        EXIT_UNREPAIRABLE: "a problem no pass can repair (nothing written)",
        EXIT_SKIPPED: "OUT written, but --skip left passes out: it may still need them",
    },
    "export": {
        EXIT_OK: "OUT written",
        EXIT_FOUND: "validation failed (nothing written)",
        EXIT_UNUSABLE: "unusable input, device or missing extra",
        EXIT_UNREPAIRABLE: "unrepairable (nothing written)",
    },
    "validate": {EXIT_OK: "all checks pass", EXIT_FOUND: "a check failed", EXIT_UNUSABLE: "unusable input or device"},
    "optimize": {
        EXIT_OK: "OUT written",
        EXIT_FOUND: "the candidate missed its tolerance (nothing written)",
        EXIT_UNUSABLE: "unusable input or output",
        EXIT_UNREPAIRABLE: "MODEL needs repair first",
    },
    "demo": {
        EXIT_OK: "the repaired model validates",
        EXIT_FOUND: "it does not",
        EXIT_UNUSABLE: "unusable output folder or missing extra",
    },
    "passes": {EXIT_OK: "listed"},
}
EVERY_COMMAND = {
    EXIT_INTERNAL: "internal error: a failure of hubert-fix itself, not a verdict (one line on stderr names the file "
    "and the report with the traceback): stop the pipeline and report it",
    EXIT_USAGE: "usage error: an unknown flag, a missing or malformed argument, contradictory options (nothing "
    "was read): a mistake in the command line, never a verdict on the model",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C, at any moment, start-up included): not a verdict, whatever was printed "
    "before; an output is written whole or not at all",
    EXIT_SIGPIPE: "stdout closed early (e.g. piped to head)",
}


_MARK = "\x1f"  # brackets an argument's name (and value) in a message; never in a path we print
_UNSET = object()
_QUOTES = ("'", '"')
_ARGUMENT = re.compile(f"{_MARK}([a-z_]+){_MARK}(.*?){_MARK}", re.S)


def argument(name: str, value: object = _UNSET) -> str:
    """An API argument named in a message: ``name`` or ``name=value`` through the API; the
    CLI shows the flag it has for it instead (``HubertFixError.text``)."""
    return f"{_MARK}{name}{_MARK}{'' if value is _UNSET else repr(value)}{_MARK}"


def _as_argument(match: re.Match[str]) -> str:
    name, value = match.group(1), match.group(2)
    return f"{name}={value}" if value else name


class HubertFixError(Exception):
    """A failure the user can act on. The message names the file and the next step."""

    exit_code = EXIT_UNUSABLE

    def __init__(self, message: str, *, report: object = None) -> None:
        super().__init__(message)
        self.raw = message
        self.report = report  # what was found before failing, for the CLI to print

    def __str__(self) -> str:
        """The message in the API's terms (arguments by their Python names)."""
        return _ARGUMENT.sub(_as_argument, self.raw)

    def text(self, flags: Mapping[str, str]) -> str:
        """The message with each argument shown as ``flags`` names it (the CLI's own options: one for
        the argument, or one for the argument with that value, ``"precision=int8": "--int8"``)."""

        def flag(match: re.Match[str]) -> str:
            name, value = match.group(1), match.group(2)
            if name not in flags:
                return _as_argument(match)
            if value in ("", "True"):
                return flags[name]
            shown = value[1:-1] if value[:1] in _QUOTES else value  # a string's repr: its text
            return flags.get(f"{name}={shown}", f"{flags[name]} {shown}")  # a flag for the value itself

        return _ARGUMENT.sub(flag, self.raw)


class UnusableInputError(HubertFixError):
    """The input file, checkpoint or output path cannot be used."""

    exit_code = EXIT_UNUSABLE


class UsageError(HubertFixError):
    """The arguments are wrong: unknown, missing, malformed or contradictory (the CLI's usage error)."""

    exit_code = EXIT_USAGE


class DeviceUnavailableError(HubertFixError):
    """The requested execution device (CUDA) does not really run the session."""

    exit_code = EXIT_UNUSABLE


class UnrepairableError(HubertFixError):
    """The model has problems that no pass can repair; nothing was written."""

    exit_code = EXIT_UNREPAIRABLE


class MissingExtraError(HubertFixError):
    """An optional dependency (the [export] extra) is not installed."""

    exit_code = EXIT_UNUSABLE


def install_hint(extra: str, pin: str = "") -> str:
    """How to install an optional extra (``pin``: packages to name with it). hubert-fix is
    not on PyPI, so ``pip install 'hubert-fix[extra]'`` would not work: from its checkout
    or its wheel."""
    return (
        f"pip install {pin}-e '.[{extra}]' in the hubert-fix checkout, or pip install "
        f"{pin}'hubert_fix-{__version__}-py3-none-any.whl[{extra}]' with its wheel"
    )


def one_line(text: object, limit: int = 300) -> str:
    """Collapse a library message to a single line of bounded length."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."
