"""One error base class; every user-facing failure is a HubertFixError.

The CLI prints ``str(error)`` as one line on stderr and exits with ``error.exit_code``.
Anything that is not a HubertFixError is a failure the code did not anticipate: the CLI
exits with EXIT_INTERNAL (never 0 or 1, which are verdicts), one line on stderr, and
writes the traceback to a report file; the API lets it propagate unchanged.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FOUND = 1  # check: repairable problems found; validate: a check failed
EXIT_UNUSABLE = 2  # unusable input (file, checkpoint, device)
EXIT_UNREPAIRABLE = 3  # check/repair: problems that no pass can repair
EXIT_INTERNAL = 4  # a failure of hubert-fix itself (a bug): not a verdict
EXIT_INTERRUPTED = 130  # Ctrl-C (the shell's code for SIGINT)


class HubertFixError(Exception):
    """A failure the user can act on. The message names the file and the next step."""

    exit_code = EXIT_UNUSABLE

    def __init__(self, message: str, *, report: object = None) -> None:
        super().__init__(message)
        self.report = report  # what was found before failing, for the CLI to print


class UnusableInputError(HubertFixError):
    """The input file, checkpoint or output path cannot be used."""

    exit_code = EXIT_UNUSABLE


class DeviceUnavailableError(HubertFixError):
    """The requested execution device (CUDA) does not really run the session."""

    exit_code = EXIT_UNUSABLE


class UnrepairableError(HubertFixError):
    """The model has problems that no pass can repair; nothing was written."""

    exit_code = EXIT_UNREPAIRABLE


class MissingExtraError(HubertFixError):
    """An optional dependency (the [export] extra) is not installed."""

    exit_code = EXIT_UNUSABLE
