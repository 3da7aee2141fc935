"""OpenVINO as a validation target: a model compiled by OpenVINO's CPU plugin, behind the two
calls validation makes of a session (``run``, ``get_providers``).

Optional (the [openvino] extra). OpenVINO compiles the ONNX file itself
with its own defaults, as a user's ``ov.compile_model(model, "CPU")`` does: on a CPU with
bfloat16 (AVX-512 BF16, AMX) it then infers in bfloat16, elsewhere in float32;
``inference_precision`` says which it chose, and validation applies that precision's
tolerance. Compiling runs first in a forked child (``isolation``), as ONNX Runtime's
session creation does: a crash of OpenVINO's C++ there is ``OpenVinoCrash`` (exit 2).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hubert_fix import interrupts
from hubert_fix.errors import MissingExtraError, UnusableInputError, argument, install_hint, one_line
from hubert_fix.onnxio import isolation
from hubert_fix.onnxio.heap import page_out
from hubert_fix.onnxio.isolation import ChildError, Crashed, in_child

#: OpenVINO's element types for the inference precisions it may choose, as our precision names.
PRECISIONS = {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}
HINTS = {ours: theirs for theirs, ours in PRECISIONS.items()}


class OpenVinoError(Exception):
    """OpenVINO rejected the model or failed to run it: a failed check, like ONNX Runtime's errors."""


class OpenVinoCrash(UnusableInputError):
    """OpenVINO's C++ crashed compiling the model (in the isolated child): unusable input."""


def require_openvino() -> Any:
    """The openvino module (MissingExtraError if it is not installed)."""
    try:
        with interrupts.deferred():  # its native init is not cut by a Ctrl-C (raised after)
            import openvino
    except ImportError:
        raise MissingExtraError(
            f"{argument('runtime', 'openvino')} needs OpenVINO, which is not installed: {install_hint('openvino')}"
        ) from None
    return openvino


def message(exc: BaseException) -> str:
    """OpenVINO's error on one line, without its C++ source locations."""
    text = re.sub(r"Exception from src/\S+:\d+:\s*", "", str(exc))
    text = re.sub(r"\s*at src/\S+:\d+:?", "", text)
    return one_line(text)


class OpenVinoSession:
    """A compiled OpenVINO model that answers ``run`` and ``get_providers`` as an ORT session does.

    ``files``: what OpenVINO read the model from; after the first run, once the plugin has
    converted the weights, the pages of its mappings of them are handed back (``heap.page_out``).
    """

    def __init__(self, compiled: Any, files: Sequence[str] = ()) -> None:
        self._compiled = compiled
        self._mapped = list(files)
        chosen = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()  # "f32", "bf16", ...
        self.inference_precision = PRECISIONS.get(chosen, chosen)

    def get_providers(self) -> list[str]:
        return [f"OpenVINO CPU ({self.inference_precision})"]

    def run(self, output_names: object, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        try:
            result = self._compiled(feeds)
        except RuntimeError as exc:  # how OpenVINO reports a failed inference
            raise OpenVinoError(message(exc)) from None
        page_out(self._mapped)
        self._mapped = []
        return [np.asarray(result[port]) for port in self._compiled.outputs]


def float_precisions() -> list[str]:
    """The float precisions OpenVINO's CPU plugin computes in on this CPU, fastest first."""
    capabilities = require_openvino().Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    return ["bf16", "fp32"] if "BF16" in capabilities else ["fp32"]


def _compile(path: str, precision: str | None) -> Any:
    ov = require_openvino()
    config = {} if precision is None else {"INFERENCE_PRECISION_HINT": HINTS[precision]}
    try:
        return ov.Core().compile_model(path, "CPU", config)
    except RuntimeError as exc:
        raise OpenVinoError(message(exc)) from None


def _probe(path: str, precision: str | None) -> bytes:
    try:
        _compile(path, precision)
    except OpenVinoError as exc:
        return b"no" + str(exc).encode()
    return b"ok"


def isolated(work: Callable[[], bytes], name: str, doing: str) -> bytes:
    """``work()`` (OpenVINO ``doing`` ``name``) in a forked child; its crash or hang is OpenVinoCrash
    (exit 2). ``work``'s own exceptions come back as ChildError, for the caller to judge."""
    try:
        return in_child(work)
    except Crashed as crash:
        if crash.signal is None:
            raise OpenVinoCrash(f"{name}: OpenVINO did not finish {doing} {name} in {isolation.TIMEOUT_S} s") from None
        raise OpenVinoCrash(
            f"{name}: OpenVINO crashed while {doing} {name} ({crash.signal}; isolated): "
            "this model cannot be deployed with it"
        ) from None


def create_openvino_session(path: str, name: str, *, precision: str | None = None) -> OpenVinoSession:
    """``path`` (an ONNX file, its external data beside it, or an OpenVINO IR .xml) compiled for
    OpenVINO's CPU plugin, in ``precision`` ("fp32", "bf16"; None: the one OpenVINO chooses)."""
    require_openvino()  # MissingExtraError before any work
    try:
        reply = isolated(lambda: _probe(path, precision), name, "compiling")
    except ChildError as exc:
        raise RuntimeError(f"OpenVINO probe for {name} failed: {exc}") from None
    if reply != b"ok":
        raise OpenVinoError(reply[2:].decode(errors="replace"))
    weights = [str(Path(path).with_suffix(".bin"))] if path.endswith(".xml") else []  # an IR's; else the ONNX file
    return OpenVinoSession(_compile(path, precision), [path, *weights])
