"""Reading an ONNX model safely: its skeleton (weights left on disk), checked before anything trusts it.

Every way a file can be unusable (missing, a directory, empty, not ONNX, truncated,
invalid, damaged values, weights shorter than their shapes) becomes one
``UnusableInputError`` line that names the file.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import onnx

from hubert_fix.errors import UnusableInputError, one_line
from hubert_fix.onnxio import skeleton
from hubert_fix.onnxio.checking import checkable
from hubert_fix.onnxio.damage import first_damaged_value, first_invalid_text


@dataclass
class ModelFile:
    """A model as loaded: the graph in memory, large weights left on disk (see skeleton).

    ``source`` is the file the stubs' locations resolve against (None for a model built
    in memory, which has no stubs).
    """

    proto: onnx.ModelProto
    source: Path | None = None
    # each stub's span, checked once (keyed by its external_data entries: a rewrite that
    # replaces or drops stubs changes what ``spans`` returns, never a stale span)
    _checked: dict[tuple[str, tuple[tuple[str, str], ...]], skeleton.Span] = field(
        default_factory=dict, repr=False, compare=False
    )

    @property
    def external_data(self) -> bool:
        """The input keeps weights in separate files (stubs not into itself): so does the output."""
        return self.source is not None and any(
            {e.key: e.value for e in t.external_data}.get("location") != self.source.name
            for t in skeleton.stubs(self.proto)
        )

    def spans(self) -> dict[str, skeleton.Span]:
        """Where each stub's bytes are (checked against the files when first asked)."""
        if self.source is None:
            return {}
        found = {}
        for tensor in skeleton.stubs(self.proto):
            key = (tensor.name, tuple((e.key, e.value) for e in tensor.external_data))
            if key not in self._checked:
                self._checked[key] = skeleton.span(tensor, self.source.parent, str(self.source))
            found[tensor.name] = self._checked[key]
        return found


STREAM = "-"
STREAM_REFUSED = (
    "standard input/output is not supported: a model may keep its weights in files beside it, "
    "and the output is written to a temporary file and renamed; give a file path"
)


def load_model(path: Path) -> ModelFile:
    """Load and check an ONNX model's skeleton, or raise UnusableInputError naming the file."""
    if str(path) == STREAM:
        raise UnusableInputError(f"-: {STREAM_REFUSED}")
    try:
        info = os.stat(path)
    except OSError as exc:
        reason = "no such file" if exc.errno == errno.ENOENT else exc.strerror
        raise UnusableInputError(f"{path}: {reason}") from None
    if stat.S_ISDIR(info.st_mode):
        raise UnusableInputError(f"{path}: is a directory, not an ONNX file")
    if not stat.S_ISREG(info.st_mode):
        raise UnusableInputError(f"{path}: not a regular file")
    if info.st_size == 0:
        raise UnusableInputError(f"{path}: empty file (0 bytes), not an ONNX model")
    try:
        model = skeleton.read_single_file(path)
    except OSError as exc:
        raise UnusableInputError(f"{path}: cannot read: {one_line(exc.strerror or exc)}") from None
    except Exception as exc:  # protobuf raises assorted types on damaged files
        hint = "; it is a zip archive (a PyTorch checkpoint? use hubert-fix export)" if _is_zip(path) else ""
        raise UnusableInputError(
            f"{path}: not a readable ONNX model (truncated or corrupt?): {one_line(exc)}{hint}"
        ) from None
    loaded = ModelFile(model, path)
    try:
        onnx.checker.check_model(checkable(model))
    except Exception as exc:  # onnx.checker.ValidationError and protobuf errors on damaged fields
        raise UnusableInputError(f"{path}: not a valid ONNX model: {one_line(exc)}") from None
    if not model.graph.node:
        raise UnusableInputError(f"{path}: ONNX model has an empty graph")
    produced = {name for node in model.graph.node for name in node.output}
    if not any(output.name in produced for output in model.graph.output):  # its nodes are all dead code
        raise UnusableInputError(f"{path}: ONNX model computes nothing: every output is a graph input or a weight")
    broken = first_invalid_text(model)
    if broken:
        raise UnusableInputError(f"{path}: damaged ONNX model: {broken} is not valid UTF-8")
    damage = first_damaged_value(model.graph)
    if damage:
        raise UnusableInputError(f"{path}: damaged ONNX model: {damage}")
    loaded.spans()  # every weight's bytes are there, as long as its shape says
    return loaded


def _is_zip(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(4) == b"PK\x03\x04"
