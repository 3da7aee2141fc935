"""Ctrl-C: recorded the moment it arrives, and kept out of the moments it must not break.

A KeyboardInterrupt does not always reach the CLI as one. ONNX Runtime's native module
turns one raised while it initialises into ImportError ("initialization failed"); one
raised in an at-fork hook, a finalizer or a weakref callback is printed as "Exception
ignored in ..." and swallowed, and the command goes on to a verdict. ``install`` (the
console script's first step) therefore records that SIGINT arrived before it raises,
and the CLI answers 130 whenever ``received()``, whatever became of the exception.

``deferred`` holds an interrupt back over a moment that must not be cut in two (a fork
and its at-fork hooks, a report written to stdout) and raises it when the moment ends.
"""

from __future__ import annotations

import signal
import sys
from contextlib import contextmanager

TYPE_CHECKING = False  # imported before the handler is in place: not even typing at run time
if TYPE_CHECKING:
    from collections.abc import Iterator
    from types import FrameType, TracebackType

_received = False


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    global _received
    answering = _received and sys.exc_info()[1] is not None  # an except or finally block after an interrupt
    _received = True
    if not answering:  # a second Ctrl-C does not cut short the answer to the first, nor its clean-up
        raise KeyboardInterrupt


def _quiet_unraisable(unraisable: sys.UnraisableHookArgs) -> None:
    """An interrupt swallowed by a finalizer or a hook is recorded: no traceback for it."""
    if not isinstance(unraisable.exc_value, KeyboardInterrupt):
        sys.__unraisablehook__(unraisable)


def _quiet_excepthook(kind: type[BaseException], value: BaseException, traceback: TracebackType | None) -> None:
    """Native code that prints the interrupt it swallows (``PyErr_Print``: ONNX Runtime's
    import, before its ImportError) prints nothing: the CLI's one line says it."""
    if not isinstance(value, KeyboardInterrupt):
        sys.__excepthook__(kind, value, traceback)


def install() -> None:
    """Record every SIGINT (the console script's handler; the API leaves signals alone).

    A process started with SIGINT ignored (a script's background job) keeps ignoring it,
    as Python itself leaves it: the Ctrl-C of the terminal was not meant for it.
    """
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        return
    signal.signal(signal.SIGINT, _on_sigint)
    sys.unraisablehook = _quiet_unraisable
    sys.excepthook = _quiet_excepthook


def received() -> bool:
    """Whether SIGINT arrived since ``install``."""
    return _received


@contextmanager
def deferred(*, raise_after: bool = True) -> Iterator[None]:
    """No KeyboardInterrupt inside the block: a SIGINT that arrives in it is raised when it
    ends (``raise_after``), or dropped (the answer is being given: it is too late to stop).

    Python runs signal handlers in the main thread only, whichever thread the kernel
    chose, so the handler is swapped for one that only notes the signal; in a process
    forked inside the block the note is all that happens until the child sets its own.
    """
    previous = signal.getsignal(signal.SIGINT)
    arrived: list[int] = []
    try:
        if not callable(previous):  # SIG_IGN or SIG_DFL: nothing raises
            raise ValueError
        signal.signal(signal.SIGINT, lambda signum, frame: arrived.append(signum))
    except ValueError:  # not the main thread: only the main thread runs handlers
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if arrived and raise_after:
            previous(signal.SIGINT, None)
