"""ONNX Runtime sessions: what really runs, ORT's errors as one line, its crashes isolated.

Used by ``runner`` (a repaired model must load before it is written; a model ORT cannot
load at all is unusable input) and by ``validate`` (the matrix runs on a session).

ONNX Runtime can crash (SIGSEGV, abort) creating a session for a model it should reject
(1.31's CPU provider on a float16 Transpose feeding a MatMul). Session creation on a
user's file therefore first runs in a forked child process (``isolation``): a crash
there is ``OrtCrash`` (exit 2), not a dead hubert-fix. ``load_error`` (check, repair)
creates its session only in the child; ``create_session`` (validate, optimize) probes in
the child, then creates the session it runs in this process (a second session creation).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state

from hubert_fix.errors import DeviceUnavailableError, UnusableInputError, argument, one_line
from hubert_fix.onnxio import isolation
from hubert_fix.onnxio.heap import map_large_allocations
from hubert_fix.onnxio.isolation import ChildError, Crashed, in_child

log = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"

#: What ONNX Runtime raises on a model or an input it rejects (its pybind11 error classes
#: derive from Exception directly; RuntimeError from its Python wrapper). Anything else
#: raised around a session is a bug of ours, never a verdict on the model.
ORT_ERRORS: tuple[type[Exception], ...] = (
    RuntimeError,
    *(c for c in vars(onnxruntime_pybind11_state).values() if isinstance(c, type) and issubclass(c, Exception)),
)


class OrtCrash(UnusableInputError):
    """ONNX Runtime died (a signal) creating a session for the model: isolated, exit 2."""


def _probe(model: bytes | str, name: str, weights_folder: str | None = None, key: bytes | None = None) -> str | None:
    """Create a CPU session for ``model`` in a forked child: ORT's reason it cannot, or None.

    ``key``: what the answer depends on, when it is known (see ``isolation.in_child``).

    Raises OrtCrash when the child dies of a signal or stops answering; a bug in the
    child comes back as RuntimeError (exit 4).
    """

    def answer(level: ort.GraphOptimizationLevel | None = None) -> bytes:
        reason = _cpu_load_error(model, weights_folder, level)
        return b"ok" if reason is None else b"no" + reason.encode()

    try:
        reply = in_child(answer, key=key)
    except Crashed as crash:
        if crash.signal is None:
            raise OrtCrash(
                f"{name}: ONNX Runtime did not finish loading {name} in {isolation.TIMEOUT_S} s (stopped)"
            ) from None
        raise OrtCrash(
            f"{name}: ONNX Runtime crashed while loading {name} ({crash.signal} in session creation, onnxruntime "
            f"{ort.__version__}; isolated): this model cannot be deployed with it at its default optimization level "
            f"on this CPU{_below_default(answer)}"
        ) from None
    except ChildError as exc:
        raise RuntimeError(f"session probe for {name} failed: {exc}") from None
    return None if reply == b"ok" else reply[2:].decode(errors="replace")


def _below_default(answer: Callable[[ort.GraphOptimizationLevel], bytes]) -> str:
    """Whether a model that crashed ORT at its default level loads at the level below (in a child).

    The default (ORT_ENABLE_ALL) adds layout optimizations that depend on the CPU (NCHWc
    blocks where it has AVX2 or AVX-512); 1.31 crashes in them on a float16 Transpose feeding
    a MatMul, which every float16 transformer has.
    """
    try:
        loads = in_child(lambda: answer(ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED)) == b"ok"
    except (Crashed, ChildError):
        loads = False
    return "; it loads with graph_optimization_level=ORT_ENABLE_EXTENDED" if loads else ""


def _options(weights_folder: str | None, level: ort.GraphOptimizationLevel | None = None) -> ort.SessionOptions:
    options = ort.SessionOptions()
    if level is not None:
        options.graph_optimization_level = level
    options.log_severity_level = 4  # run failures are caught and reported by us, as one line each
    # No CPU arena: it keeps the largest case's activations (and rounds them up) for the
    # session's life; plain allocations free them between cases. Only where buffers come
    # from changes, not a kernel (outputs bit-identical, tests/onnxio/test_session.py).
    options.enable_cpu_mem_arena = False
    # Its worker threads wait for the next operator asleep, not spinning: validation runs many
    # small cases, and spinning cost 13-15% more CPU for the same answers on the tiny fixtures
    # (25 validates in one process, AMD EPYC, 2 cores; waiting, not arithmetic, changes).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if weights_folder is not None:
        options.add_session_config_entry("session.model_external_initializers_file_folder_path", weights_folder)
    return options


def _cpu_load_error(
    model: bytes | str, weights_folder: str | None, level: ort.GraphOptimizationLevel | None = None
) -> str | None:
    try:
        ort.InferenceSession(model, _options(weights_folder, level), providers=[CPU])
    except ORT_ERRORS as exc:
        return ort_message(exc)
    return None


def create_session(
    model: bytes | str, name: str, *, device: str, weights_folder: str | None = None
) -> ort.InferenceSession:
    """An ORT session on ``device`` (cpu, cuda or auto), checked against what really runs.

    onnxruntime-gpu lists CUDAExecutionProvider even without a GPU and silently falls
    back to CPU, so the providers of the created session are what count.
    ``weights_folder``: where the external data of a model given as bytes is (the
    folder of the file a skeleton's stubs point into).
    """
    map_large_allocations()  # activations freed between cases leave the process (see heap)
    _probe(model, name, weights_folder)  # OrtCrash; ORT's own errors come from the session below
    options = _options(weights_folder)
    if device == "cpu" or (device == "auto" and CUDA not in ort.get_available_providers()):
        return ort.InferenceSession(model, options, providers=[CPU])  # (asking a CPU build for CUDA: a warning)
    if device == "cuda" and CUDA not in ort.get_available_providers():
        raise DeviceUnavailableError(
            f"{name}: {argument('device', 'cuda')}: this onnxruntime has no CUDAExecutionProvider"
        )
    ort.set_default_logger_severity(4)  # a CUDA EP that fails to load logs errors; we report it once
    try:
        session = ort.InferenceSession(model, options, providers=[CUDA, CPU])
    finally:
        ort.set_default_logger_severity(2)
    if session.get_providers()[0] == CUDA:
        return session
    if device == "cuda":
        raise DeviceUnavailableError(
            f"{name}: {argument('device', 'cuda')}: CUDAExecutionProvider did not start (no usable GPU/CUDA libraries); "
            f"use {argument('device', 'cpu')} or auto"
        )
    # ONNX Runtime fell back to its CPU provider alone: the session is a CPU session already
    # (a second one would hold the weights twice while it is created: 472 MB more at base in fp16)
    log.info("CUDA is not usable here; validating on CPU")
    return session


def ort_message(exc: Exception) -> str:
    """ORT's error without its status prefix and C++ source location, on one line."""
    text = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", str(exc))
    text = re.sub(r"/onnxruntime_src/\S+:\d+ (?:[^()]*\([^)]*\) )?", "", text)
    return one_line(text)


def load_error(model: bytes, name: str) -> str | None:
    """Why ONNX Runtime cannot create a CPU session for ``model``, or None when it can.

    ``model``: a whole serialized model (no weights in files beside it), so its bytes are
    all the answer depends on: this process answers them once. The session is created in
    a child process only; OrtCrash when ORT crashes on it.
    """
    return _probe(model, name, key=b"onnxruntime cpu session\0" + model)
