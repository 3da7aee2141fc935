"""Post-processing mutations: a mutant that loads, passed through a deployment tool.

Users run an export through their tools before it reaches the gate (README, "Files that
went through other tools"): ONNX Runtime's symbolic shape inference with auto_merge,
onnxsim (dims left dynamic, or every input pinned to one utterance), ONNX Runtime's
offline optimisation (ORT_ENABLE_BASIC, ORT_ENABLE_EXTENDED: contrib ops), onnxslim, the
fp16 converter of onnxconverter-common. Each tool's call is the one
``fixtures/after_tools.py`` makes for the fixtures (one home for them).

The tools are third-party native code that can crash or hang on an odd graph: each runs
in a forked child (``isolation.in_child``) that a SIGALRM ends after ``FUZZ_POST_TIMEOUT``
seconds (30), with its output to /dev/null. A tool that fails, crashes or hangs, returns
the model unchanged, or writes a model that ``load_model``'s checker refuses: the
mutation does not apply (``run`` returns None). The output is taken as ``load_model``
takes a file (onnx.checker on the weightless twin), not by ``graph_mutator.loadable``'s
strict shape inference, which the tools' real outputs fail: onnxsim at a static shape
turns the misaligned Where into "Incompatible dimensions", the fp16 converter leaves
Casts whose declared type differs from what they compute.
"""

from __future__ import annotations

import importlib
import math
import os
import signal
import tempfile
from pathlib import Path

import onnx
from packing import SIDE_NAME

from fixtures.after_tools import TOOLS as CALLS
from hubert_fix.onnxio.checking import checkable
from hubert_fix.onnxio.isolation import ChildError, Crashed, in_child

#: The tools, by the names ``fixtures/after_tools.TOOLS`` gives their calls.
TOOLS = ("ssi", "onnxsim", "onnxsim_static", "ort_basic", "ort_extended", "onnxslim", "fp16_onnxconverter")
TIMEOUT_S = float(os.environ.get("FUZZ_POST_TIMEOUT", "30"))
#: What the calls import, imported once here: in each child it would cost seconds.
for _module in ("onnxruntime.tools.symbolic_shape_infer", "onnxsim", "onnxslim", "onnxconverter_common.float16"):
    importlib.import_module(_module)


def run(tool: str, model: bytes, side: bytes | None) -> bytes | None:
    """``model`` (with ``weights.bin`` = ``side`` beside it) after ``tool``: a changed model that
    loads, or None where the tool does not apply."""

    def work() -> bytes:
        signal.alarm(math.ceil(TIMEOUT_S))  # a hang ends the child (SIGALRM's default action)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)  # the tools print progress and warnings of their own
        os.dup2(devnull, 2)

        with tempfile.TemporaryDirectory(prefix="hfx-post-") as tmp:
            folder = Path(tmp)
            (folder / "model.onnx").write_bytes(model)
            if side is not None:
                (folder / SIDE_NAME).write_bytes(side)
            CALLS[tool](folder / "model.onnx", folder / "out.onnx")
            out = (folder / "out.onnx").read_bytes()
        onnx.checker.check_model(checkable(onnx.ModelProto.FromString(out)))  # what load_model asks
        return out

    try:
        out = in_child(work)
    except (Crashed, ChildError):
        return None
    return None if out == model else out
