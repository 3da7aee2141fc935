"""Reading and writing ONNX models safely.

Every way a file can be unusable (missing, a directory, empty, not ONNX, truncated,
invalid) becomes one ``UnusableInputError`` line that names the file. Writing goes to a
temporary file beside the target and is renamed into place, so OUT is either the
complete new model or untouched (also on error or Ctrl-C).
"""

from __future__ import annotations

import errno
import heapq
import logging
import os
import signal
import stat
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import onnx
import onnx.numpy_helper

from hubert_fix.errors import UnusableInputError, one_line
from hubert_fix.onnxio import skeleton

log = logging.getLogger(__name__)


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
    broken = _first_invalid_text(model)
    if broken:
        raise UnusableInputError(f"{path}: damaged ONNX model: {broken} is not valid UTF-8")
    damage = _first_damaged_value(model.graph)
    if damage:
        raise UnusableInputError(f"{path}: damaged ONNX model: {damage}")
    loaded.spans()  # every weight's bytes are there, as long as its shape says
    return loaded


def checkable(model: onnx.ModelProto) -> onnx.ModelProto:
    """The weightless twin, with an empty shape where an input or output declares none, and
    its nodes in topological order.

    onnx.checker insists on a shape field for graph inputs and outputs; ONNX Runtime
    (and the ONNX spec's "unknown rank") accept its absence, and so do we. It insists on
    sorted nodes too, which ONNX Runtime does not need: ``onnxruntime.transformers.float16``
    appends the Casts of the inputs after every other node. Such a file is not damaged;
    the node-order pass sorts it.
    """
    twin = skeleton.weightless(model)
    for info in [*twin.graph.input, *twin.graph.output]:
        if info.type.HasField("tensor_type") and not info.type.tensor_type.HasField("shape"):
            info.type.tensor_type.shape.SetInParent()
    order = topological_order(twin.graph)
    if order != list(range(len(twin.graph.node))):
        nodes = [twin.graph.node[i] for i in order]
        del twin.graph.node[:]
        twin.graph.node.extend(nodes)
    return twin


def topological_order(graph: onnx.GraphProto) -> list[int]:
    """The graph's node indices, each after the nodes producing its inputs, otherwise in file
    order (stable: a sorted graph keeps its order). Nodes that can never run (a cycle, a
    tensor produced twice) come last, in file order, for the checker to name."""
    producer: dict[str, int] = {}
    for index, node in enumerate(graph.node):
        for name in node.output:
            producer.setdefault(name, index)
    needs = [{producer[name] for name in node.input if name in producer} - {i} for i, node in enumerate(graph.node)]
    users: dict[int, list[int]] = {}
    for index, deps in enumerate(needs):
        for dep in deps:
            users.setdefault(dep, []).append(index)
    missing = [len(deps) for deps in needs]
    ready = [index for index, count in enumerate(missing) if count == 0]
    heapq.heapify(ready)
    order: list[int] = []
    while ready:
        index = heapq.heappop(ready)
        order.append(index)
        for user in users.get(index, ()):
            missing[user] -= 1
            if missing[user] == 0:
                heapq.heappush(ready, user)
    placed = set(order)
    return order + [i for i in range(len(graph.node)) if i not in placed]


def _is_zip(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(4) == b"PK\x03\x04"


def _first_invalid_text(model: onnx.ModelProto) -> str | None:
    """Where a name is not valid UTF-8 (protobuf then hands out bytes, not str).

    Neither the parser nor onnx.checker rejects that, but every later step that writes
    the name back would fail, so a bit flip in a name (a tensor's, a symbolic dim's, in
    the graph or in a subgraph) is reported here, as input damage.
    """
    named = [("metadata", text) for p in model.metadata_props for text in (p.key, p.value)]
    graphs = [model.graph]
    while graphs:
        graph = graphs.pop()
        infos = [*graph.input, *graph.output, *graph.value_info]
        named += [("tensor name", info.name) for info in infos]
        named += [
            ("symbolic dim", d.dim_param)
            for info in infos if info.type.HasField("tensor_type") for d in info.type.tensor_type.shape.dim
        ]  # fmt: skip
        named += [("initializer name", t.name) for t in graph.initializer]
        for node in graph.node:
            named += [("node name", node.name), ("op type", node.op_type), ("domain", node.domain)]
            named += [("tensor name", name) for name in [*node.input, *node.output]]
            named += [("attribute name", a.name) for a in node.attribute]
            for text in [a.s for a in node.attribute if a.HasField("s")] + [
                t for a in node.attribute for t in a.strings
            ]:
                try:
                    text.decode("utf-8")  # string attributes are bytes in protobuf; a mode, a direction
                except UnicodeDecodeError:
                    named.append(("string attribute", text))
            graphs += [a.g for a in node.attribute if a.HasField("g")] + [g for a in node.attribute for g in a.graphs]
    for what, text in named:
        if isinstance(text, bytes):
            return f"a {what} ({text[:40]!r})"
    return None


_DATA_TYPES = frozenset(onnx.TensorProto.DataType.values())
_INTS = (onnx.TensorProto.INT64, onnx.TensorProto.INT32)
#: No tensor has more elements than this along one axis; larger ints in a small constant
#: are damage, except the sentinels exporters write for "to the end" (|v| >= 2**62).
_ABSURD_INT = 1 << 40


def _first_damaged_value(graph: onnx.GraphProto) -> str | None:
    """A field the parser and onnx.checker let through that no model can mean.

    An unknown element type (one flipped byte in ``data_type``) breaks every later step;
    an absurd integer in a small constant (a shape, an axis) makes shape inference try to
    materialise a tensor of that size. Both are refused here, before any work.
    """
    tensors = [(f"initializer {t.name}", t) for t in graph.initializer]
    for node in graph.node:
        for attr in node.attribute:
            label = f"{node.op_type} node {node.name or '(unnamed)'}"
            tensors += [(label, attr.t)] if attr.HasField("t") else []
            tensors += [(label, t) for t in attr.tensors]
            for sub in [attr.g, *attr.graphs] if attr.HasField("g") or attr.graphs else []:
                found = _first_damaged_value(sub)
                if found:
                    return found
    seen: set[str] = set()
    for tensor in graph.initializer:
        if tensor.name in seen:  # onnx.checker lets it through; which of the two would a runtime take?
            return f"initializer {tensor.name} is defined twice"
        seen.add(tensor.name)
    if graph.sparse_initializer:
        return f"sparse initializer {graph.sparse_initializer[0].values.name or '(unnamed)'}: not supported"
    for label, tensor in tensors:
        if tensor.data_type not in _DATA_TYPES or tensor.data_type == onnx.TensorProto.UNDEFINED:
            return f"{label} has element type {tensor.data_type}, which ONNX does not define"
        if tensor.data_location != onnx.TensorProto.EXTERNAL and tensor.HasField("raw_data"):
            expected = skeleton.nbytes(tensor)
            if expected is not None and expected != len(tensor.raw_data):
                return f"{label} holds {len(tensor.raw_data)} bytes where its type and shape need {expected}"
        if tensor.data_type in _INTS and tensor.data_location != onnx.TensorProto.EXTERNAL and len(tensor.dims) <= 1:
            values = onnx.numpy_helper.to_array(tensor).reshape(-1) if _size(tensor) <= 64 else ()
            absurd = [int(v) for v in values if _ABSURD_INT < abs(int(v)) < 1 << 62]
            if absurd:
                return f"{label} holds the integer {absurd[0]}, larger than any tensor dimension"
    for info in [*graph.input, *graph.output, *graph.value_info]:
        elem = info.type.tensor_type.elem_type if info.type.HasField("tensor_type") else 0
        if elem not in _DATA_TYPES:
            return f"value {info.name} has element type {elem}, which ONNX does not define"
    return None


def _size(tensor: onnx.TensorProto) -> int:
    count = 1
    for dim in tensor.dims:
        count *= max(int(dim), 0)
    return count


def same_file(a: Path, b: Path) -> bool:
    """``a`` and ``b`` name one file: the same path, a symlink to it, or a hard link."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet): only the resolved paths can tell
        return os.path.realpath(a) == os.path.realpath(b)


def _same_path(a: Path, b: Path) -> bool:
    """The same name (not just the same file: renaming onto a link replaces the link)."""
    return os.path.abspath(a) == os.path.abspath(b)


def read_files(
    model: ModelFile | None = None, *, files: Iterable[Path | None] = (), dict_dir: Path | None = None
) -> list[Path]:
    """Every file a command reads: MODEL and its external data files, a checkpoint or
    reference, and the vocabularies in a ``--dict-dir`` (outputs are checked against these)."""
    reads = [Path(f) for f in files if f is not None]
    if model is not None and model.source is not None:
        reads += [model.source, *sorted({span.file for span in model.spans().values()})]
    if dict_dir is not None and Path(dict_dir).is_dir():
        reads += sorted(Path(dict_dir).glob("dict.*.txt"))
    return reads


def check_output_path(out: Path, *, reads: Iterable[Path] = (), replaces: Path | None = None) -> None:
    """Fail before any work if OUT cannot be written, or is a file the command reads.

    ``reads``: every file the command reads (see ``read_files``); OUT may be none of them,
    by any name (a symlink, a hard link), except ``replaces`` (``--in-place``: MODEL, by its own name).
    """
    if str(out) == STREAM:
        raise UnusableInputError(f"-: {STREAM_REFUSED}")
    for read in reads:
        if same_file(out, read) and not (
            replaces is not None and _same_path(out, replaces) and same_file(read, replaces)
        ):
            raise UnusableInputError(
                f"{out}: output is the same file as {read}, which this command reads; choose another path"
            )
    if out.is_dir():
        raise UnusableInputError(f"{out}: output path is a directory")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise UnusableInputError(f"{out}: output directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UnusableInputError(f"{out}: output directory {parent} is not writable")


def check_model_output(model: ModelFile, out: Path, reads: Iterable[Path], *, in_place: bool = False) -> None:
    """OUT, and OUT.data when the model keeps its weights in files, against every file read.

    With ``in_place`` OUT may be MODEL itself, and then OUT.data may be MODEL's data file
    (both are replaced by complete new files, renamed into place).
    """
    reads = list(reads)
    replaces = model.source if in_place else None
    check_output_path(out, reads=reads, replaces=replaces)
    if model.external_data and model.spans():
        own = set(read_files(model)) if replaces is not None and same_file(out, replaces) else set()
        check_output_path(data_path(out), reads=[r for r in reads if r not in own])


def process_umask() -> int:
    """The process umask (mkstemp creates 0600 files; OUT gets the usual permissions)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def data_path(out: Path) -> Path:
    """Where the weights of an external-data output go: next to OUT, named after it."""
    return out.with_name(out.name + ".data")


def save_model(model: ModelFile, out: Path, *, in_place: bool = False) -> None:
    """Write ``model`` to ``out`` atomically: temp files in the same folder, then rename.

    Weights are copied file to file (see skeleton.write). An external-data model gets
    its weights in ``OUT.data``; that file is renamed into place just before OUT, with
    Ctrl-C held off between the two renames. ``in_place`` and OUT is the model itself:
    the data files the old model referenced and the new one does not (one file per
    tensor, as torch writes them) are removed once OUT is in place, so no orphan is left.
    """
    check_model_output(model, out, read_files(model), in_place=in_place)
    outside = model.spans()
    targets = [out]
    same_as_input = model.source is not None and same_file(out, model.source)
    if model.external_data and outside:
        targets.insert(0, data_path(out))
    staged: list[tuple[int, Path, Path]] = []
    try:
        for target in targets:
            fd, tmp = _temp_beside(target)
            staged.append((fd, Path(tmp), target))
        data_fd = (staged[0][0], targets[0].name) if len(staged) == 2 else None
        skeleton.write(model.proto, outside, staged[-1][0], data=data_fd)
        for index, (fd, tmp, target) in enumerate(staged):
            os.fsync(fd)
            os.close(fd)
            staged[index] = (-1, tmp, target)
            os.chmod(tmp, 0o666 & ~process_umask())
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            for _, tmp, target in staged:
                os.replace(tmp, target)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        if in_place and same_as_input and model.external_data:  # only when MODEL itself was replaced
            _remove_orphans({span.file for span in outside.values()}, keep=targets)
    except BaseException as exc:
        for fd, tmp, _ in staged:
            if fd >= 0:
                os.close(fd)
            tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise UnusableInputError(f"{out}: cannot write: {one_line(exc.strerror or exc)}") from None
        raise
    log.debug("wrote %s (%.1f MB)", out, sum(t.stat().st_size for t in targets) / 1e6)


def _remove_orphans(referenced: set[Path], *, keep: list[Path]) -> None:
    """Remove the old model's data files that the new one does not use (never one of ``keep``)."""
    for old in referenced:
        if old.exists() and not any(same_file(old, k) for k in keep):
            old.unlink()
            log.debug("removed %s, no longer referenced", old)


def write_bytes(path: Path, data: bytes) -> None:
    """Write a report file atomically (temp file beside it, then rename), or UnusableInputError."""
    check_output_path(path)
    fd, tmp = _temp_beside(path)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o666 & ~process_umask())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise UnusableInputError(f"{path}: cannot write: {one_line(exc.strerror or exc)}") from None
        raise


def _temp_beside(target: Path) -> tuple[int, str]:
    parent = target.parent if str(target.parent) else Path(".")
    return tempfile.mkstemp(dir=parent, prefix=f".{target.name}.", suffix=".tmp")
