"""The runtimes a model is validated on, in one place: their names, their sessions and their errors.

ONNX Runtime (``session``) or OpenVINO's CPU plugin (``openvino``), both behind the two calls
validation makes of a session (``run``, ``get_providers``). A runtime's own error on a model
is a failed check, never a bug of ours (``RUNTIME_ERRORS``).
"""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort

from hubert_fix.errors import DeviceUnavailableError, UsageError, argument
from hubert_fix.onnxio.openvino import OpenVinoError, OpenVinoSession, create_openvino_session
from hubert_fix.onnxio.reading import ModelFile
from hubert_fix.onnxio.session import ORT_ERRORS, create_session, ort_message

ONNXRUNTIME, OPENVINO = "onnxruntime", "openvino"
#: Each runtime's name (as the API and the CLI take it) and how reports name it.
RUNTIMES = {ONNXRUNTIME: "ONNX Runtime", OPENVINO: "OpenVINO"}
Session = ort.InferenceSession | OpenVinoSession
RUNTIME_ERRORS = (*ORT_ERRORS, OpenVinoError)


def known(runtime: str) -> str:
    """``runtime`` when it is one of ``RUNTIMES`` (a UsageError otherwise)."""
    if runtime not in RUNTIMES:
        raise UsageError(f"{argument('runtime', runtime)}: one of {', '.join(RUNTIMES)}")
    return runtime


def open_session(
    model: ModelFile, name: str, *, saved: Path | None, device: str, runtime: str, hint: str | None
) -> Session:
    """An ONNX Runtime session (on ``device``) or an OpenVINO CPU model (``hint``: its precision) for
    ``model``: the file ``saved``, or else (ONNX Runtime only) ``model`` serialized, its weights read
    from beside ``model.source``."""
    if known(runtime) == OPENVINO:
        if device == "cuda":
            raise DeviceUnavailableError(f"{name}: {argument('runtime', OPENVINO)} runs on the CPU here, not CUDA")
        if saved is None:
            raise ValueError("OpenVINO validates a model file: give saved")
        return create_openvino_session(str(saved), name, precision=hint)
    folder = model.source.parent if model.source is not None and saved is None else None
    return create_session(
        str(saved) if saved else model.proto.SerializeToString(), name, device=device,
        weights_folder=str(folder) if folder else None,
    )  # fmt: skip


def failure(exc: Exception) -> str:
    """A runtime's error as reports tell it: which runtime, and its message on one line."""
    if isinstance(exc, OpenVinoError):
        return f"{RUNTIMES[OPENVINO]}: {exc}"
    return f"{RUNTIMES[ONNXRUNTIME]}: {ort_message(exc)}"
