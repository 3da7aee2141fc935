"""Reading and writing ONNX models safely.

Every way a file can be unusable (missing, a directory, empty, not ONNX, truncated,
invalid) becomes one ``UnusableInputError`` line that names the file. Writing goes to a
temporary file beside the target and is renamed into place, so OUT is either the
complete new model or untouched (also on error or Ctrl-C).
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError

from hubert_fix.errors import UnusableInputError

log = logging.getLogger(__name__)


def one_line(text: object, limit: int = 300) -> str:
    """Collapse a library message to a single line of bounded length."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def load_model(path: Path) -> onnx.ModelProto:
    """Load and check an ONNX model, or raise UnusableInputError naming the file."""
    if not path.exists():
        raise UnusableInputError(f"{path}: no such file")
    if path.is_dir():
        raise UnusableInputError(f"{path}: is a directory, not an ONNX file")
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise UnusableInputError(f"{path}: cannot read: {one_line(exc.strerror or exc)}") from None
    if size == 0:
        raise UnusableInputError(f"{path}: empty file (0 bytes), not an ONNX model")
    try:
        model = onnx.load_model(str(path))
    except (DecodeError, RuntimeWarning, ValueError) as exc:
        raise UnusableInputError(f"{path}: not a readable ONNX model (truncated or corrupt?): {one_line(exc)}") from None
    except OSError as exc:
        raise UnusableInputError(f"{path}: cannot read: {one_line(exc)}") from None
    except Exception as exc:  # protobuf and onnx raise assorted types on damaged files
        raise UnusableInputError(f"{path}: not a readable ONNX model: {one_line(exc)}") from None
    try:
        onnx.checker.check_model(model)
    except Exception as exc:  # onnx.checker.ValidationError and protobuf errors on damaged fields
        raise UnusableInputError(f"{path}: not a valid ONNX model: {one_line(exc)}") from None
    if not model.graph.node:
        raise UnusableInputError(f"{path}: ONNX model has an empty graph")
    broken = _first_invalid_text(model)
    if broken:
        raise UnusableInputError(f"{path}: damaged ONNX model: {broken} is not valid UTF-8")
    return model


def _first_invalid_text(model: onnx.ModelProto) -> str | None:
    """Where a name is not valid UTF-8 (protobuf then hands out bytes, not str).

    Neither the parser nor onnx.checker rejects that, but every later step that writes
    the name back would fail, so a bit flip in a name is reported here, as input damage.
    """
    graph = model.graph
    named = [("tensor name", info.name) for info in [*graph.input, *graph.output, *graph.value_info]]
    named += [("initializer name", t.name) for t in graph.initializer]
    named += [("metadata", text) for p in model.metadata_props for text in (p.key, p.value)]
    for node in graph.node:
        named += [("node name", node.name), ("op type", node.op_type), ("domain", node.domain)]
        named += [("tensor name", name) for name in [*node.input, *node.output]]
        named += [("attribute name", a.name) for a in node.attribute]
    for what, text in named:
        if isinstance(text, bytes):
            return f"a {what} ({text[:40]!r})"
    return None


def check_output_path(out: Path, *, source: Path | None = None) -> None:
    """Fail before any work if OUT cannot be written, or would overwrite the input."""
    if source is not None and out.exists() and source.exists() and os.path.samefile(out, source):
        raise UnusableInputError(f"{out}: output is the input model; choose another -o path (the input is never modified)")
    if out.is_dir():
        raise UnusableInputError(f"{out}: output path is a directory")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise UnusableInputError(f"{out}: output directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UnusableInputError(f"{out}: output directory {parent} is not writable")


def set_metadata(model: onnx.ModelProto, entries: dict[str, str]) -> None:
    """Set ``metadata_props`` keys, replacing older values and keeping every other key."""
    kept = [p for p in model.metadata_props if p.key not in entries]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in entries.items():
        model.metadata_props.add(key=key, value=value)


def _umask() -> int:
    """The process umask (mkstemp creates 0600 files; OUT gets the usual permissions)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_model(model: onnx.ModelProto, out: Path) -> None:
    """Write ``model`` to ``out`` atomically: a temp file in the same folder, then rename."""
    parent = out.parent if str(out.parent) else Path(".")
    try:
        fd, tmp_name = tempfile.mkstemp(dir=parent, prefix=f".{out.name}.", suffix=".tmp")
    except OSError as exc:
        raise UnusableInputError(f"{out}: cannot write: {one_line(exc.strerror or exc)}") from None
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(model.SerializeToString())
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, out)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise UnusableInputError(f"{out}: cannot write: {one_line(exc.strerror or exc)}") from None
        raise
    log.info("wrote %s (%.1f MB)", out, out.stat().st_size / 1e6)
