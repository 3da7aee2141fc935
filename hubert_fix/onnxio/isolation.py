"""Native code that can crash on a user's file runs in a forked child process.

ONNX Runtime's session creation and ONNX's shape inference are C++ that a damaged or
unusual model can kill (SIGSEGV; an assertion's abort): onnxruntime 1.31's CPU
provider on a float16 Transpose feeding a MatMul, an onnx shape-inference assertion
that the fuzzer reached. Run in a child, such a crash is ``Crashed`` (the callers make
it exit 2, naming the file), not a dead hubert-fix. The cost is one fork per call (a
few ms, see the README). Without ``os.fork`` (not Linux/macOS) the work runs in this
process.

A process asks the same question more than once (check's passes, repair's proof that
its result loads, then validate, or export's repair and validation, meet the same graph):
an answer is kept by what it depends on (``in_child``'s ``key``) and given again without
a child. Only answers are kept, never a crash or an error: those are met again each time.
"""

from __future__ import annotations

import faulthandler
import hashlib
import os
import select
import signal
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import NoReturn

from hubert_fix import interrupts

#: A child that neither answers nor dies in this long is stopped (a hang is not an answer).
TIMEOUT_S = 600

#: How many answers this process keeps (the least recently used goes first): a few
#: commands' worth of graphs, each answer the size of a weightless model at most.
KEPT_ANSWERS = 32

#: Answers given, by the SHA-256 of their ``key``.
_answers: OrderedDict[bytes, bytes] = OrderedDict()


class Crashed(Exception):
    """The child died of a signal (``signal``: its name, e.g. SIGSEGV) or stopped answering (None)."""

    def __init__(self, signal_name: str | None) -> None:
        super().__init__(signal_name or f"no answer in {TIMEOUT_S} s")
        self.signal = signal_name


class ChildError(Exception):
    """``work`` raised in the child: ``kind`` is the exception's type name, the message its text."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind


def in_child(work: Callable[[], bytes], *, key: bytes | None = None) -> bytes:
    """``work()``, computed in a forked child, or Crashed / ChildError.

    ``key``: everything the answer depends on (what the work is and the bytes it reads);
    an answer already given for the same key in this process is given again, without a child.

    Ctrl-C is the parent's to answer: no interrupt is raised in the fork's at-fork hooks
    (in either process: one there would be printed as "Exception ignored" and lost), the
    child ignores SIGINT from its first instruction, and a parent interrupted while it
    waits stops the child before it goes on.
    """
    digest = None if key is None else hashlib.sha256(key).digest()
    if digest in _answers:
        _answers.move_to_end(digest)
        return _answers[digest]
    answer = _computed(work)
    if digest is not None:
        _answers[digest] = answer
        while len(_answers) > KEPT_ANSWERS:
            _answers.popitem(last=False)
    return answer


def _computed(work: Callable[[], bytes]) -> bytes:
    """``work()`` in a forked child (see ``in_child``)."""
    if not hasattr(os, "fork"):
        return work()
    read_end, write_end = os.pipe()
    open_ends, pid, answered = [read_end, write_end], 0, False
    try:
        with interrupts.deferred():
            pid = os.fork()
            if pid == 0:
                _answer(work, read_end, write_end)
        os.close(open_ends.pop())  # the child's end
        chunks, deadline = [], time.monotonic() + TIMEOUT_S
        while True:
            ready, _, _ = select.select([read_end], [], [], max(0.0, deadline - time.monotonic()))
            chunk = os.read(read_end, 1 << 20) if ready else None
            if not chunk:
                break
            chunks.append(chunk)
        answered = bool(ready)
    finally:
        for fd in open_ends:
            os.close(fd)
        if pid:
            if not answered:  # no answer in time, or the parent was interrupted: stop the child
                os.kill(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
    if not answered:
        raise Crashed(None)
    if os.WIFSIGNALED(status):
        raise Crashed(signal.Signals(os.WTERMSIG(status)).name)
    answer = b"".join(chunks)
    if answer[:1] == b"R":
        return answer[1:]
    kind, _, message = answer[1:].decode(errors="replace").partition("\n")
    raise ChildError(kind or f"exit {os.WEXITSTATUS(status)}", message)


def _answer(work: Callable[[], bytes], read_end: int, write_end: int) -> NoReturn:
    """The child: answer through the pipe, never return into the caller's code."""
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
        faulthandler.disable()  # the parent reports a crash, in one line
        os.close(read_end)
        try:
            answer = b"R" + work()
        except BaseException as exc:  # noqa: BLE001 - the parent decides what it means
            answer = b"X" + f"{type(exc).__name__}\n{exc}".encode(errors="replace")
        view = memoryview(answer)
        while view:
            view = view[os.write(write_end, view) :]
    finally:
        os._exit(0)
