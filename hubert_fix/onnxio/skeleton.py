"""Models without their weights in memory: read the graph, leave the bytes on disk.

A HuBERT large export is 1.3 GB, nearly all of it the raw bytes of a few hundred
initializers, and no pass looks at them. So a model is loaded as a *skeleton*: every
initializer whose raw data is larger than ``INLINE_LIMIT`` becomes a stub, a TensorProto
marked as ONNX external data (``location``, ``offset``, ``length``) that points at where
its bytes already are. For a single-file model that is the model file itself, found by
reading the protobuf wire format directly (so the weights are never parsed or copied);
for an external-data model it is the data files the model already names.

Writing (``write``) copies each stub's bytes file to file with ``copy_file_range``:
inline again for a single-file input, or into one data file next to the output for an
external-data input. Small tensors a pass adds stay inline.

``weightless`` gives the copy that onnx.checker and ONNX Runtime verify: the stubs turned
into graph inputs of the same dtype and shape, so checking a 1.3 GB model reads no weight.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError

from hubert_fix.errors import UnusableInputError

#: Initializers with more raw bytes than this stay on disk (below it, passes may read them).
INLINE_LIMIT = 1024
#: Alignment of tensors in a data file written by ``write`` (page size: ORT can mmap them).
ALIGNMENT = 4096

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5
_MODEL_GRAPH = 7  # ModelProto.graph
_GRAPH_INITIALIZER = 5  # GraphProto.initializer
_TENSOR_RAW_DATA = 9  # TensorProto.raw_data
_COPY_CHUNK = 64 << 20


@dataclass(frozen=True)
class Span:
    """Where one stub's bytes are: ``length`` bytes at ``offset`` of ``file``."""

    file: Path
    offset: int
    length: int


# ------------------------------------------------------------------ wire format


class _Window:
    """Byte access to a file through a small moving window of ``pread``s.

    The scanner reads tags, lengths and small fields and jumps over weights; a window
    keeps it from touching (and, unlike mmap, from mapping into RSS) anything else.
    """

    SIZE = 1 << 16

    def __init__(self, fd: int, size: int) -> None:
        self.fd, self.size = fd, size
        self.start, self.data = 0, b""

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, key: int | slice) -> int | bytes:
        if isinstance(key, slice):
            if self.start <= key.start and key.stop <= self.start + len(self.data):
                return self.data[key.start - self.start : key.stop - self.start]
            return os.pread(self.fd, key.stop - key.start, key.start)
        if not self.start <= key < self.start + len(self.data):
            self.start, self.data = key, os.pread(self.fd, self.SIZE, key)
            if not self.data:
                raise DecodeError(f"read past the end of the file at byte {key}")
        return self.data[key - self.start]


def _varint(buf: bytes | _Window, pos: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise DecodeError(f"varint at byte {pos} runs past its field")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _fields(buf: bytes | _Window, start: int, end: int) -> Iterator[tuple[int, int, int, int, int]]:
    """(field number, wire type, field start, payload start, field end) of one message."""
    pos = start
    while pos < end:
        tag, payload = _varint(buf, pos, end)
        number, wire = tag >> 3, tag & 7
        if wire == _VARINT:
            field_end = _varint(buf, payload, end)[1]
        elif wire == _LEN:
            size, payload = _varint(buf, payload, end)
            field_end = payload + size
        elif wire in (_I64, _I32):
            field_end = payload + (8 if wire == _I64 else 4)
        else:
            raise DecodeError(f"wire type {wire} at byte {pos} (not used by ONNX)")
        if number == 0 or field_end > end:
            raise DecodeError(f"field at byte {pos} runs past the end of its message (truncated?)")
        yield number, wire, pos, payload, field_end
        pos = field_end


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _len_field(number: int, size: int) -> bytes:
    """Tag and length prefix of a length-delimited field of ``size`` bytes."""
    return _encode_varint(number << 3 | _LEN) + _encode_varint(size)


# ------------------------------------------------------------------ reading


def read_single_file(path: Path) -> onnx.ModelProto:
    """The skeleton of a model file: initializer raw data over INLINE_LIMIT left in place."""
    with open(path, "rb") as handle:
        buf = _Window(handle.fileno(), os.fstat(handle.fileno()).st_size)
        model_bytes, graph_bytes = bytearray(), bytearray()
        for number, wire, start, payload, end in _fields(buf, 0, len(buf)):
            if number != _MODEL_GRAPH or wire != _LEN:
                model_bytes += buf[start:end]
                continue
            for g_number, g_wire, g_start, g_payload, g_end in _fields(buf, payload, end):
                if g_number == _GRAPH_INITIALIZER and g_wire == _LEN and g_end - g_payload > INLINE_LIMIT:
                    stub = _stub(buf, g_payload, g_end, path.name)
                    graph_bytes += _len_field(_GRAPH_INITIALIZER, len(stub)) + stub
                else:
                    graph_bytes += buf[g_start:g_end]
    model = onnx.ModelProto()
    model.ParseFromString(bytes(model_bytes))
    model.graph.ParseFromString(bytes(graph_bytes))
    return model


def _stub(buf: _Window, start: int, end: int, location: str) -> bytes:
    """A TensorProto's bytes with a large raw_data replaced by an external-data reference."""
    header = bytearray()
    raw: tuple[int, int] | None = None
    for number, wire, f_start, payload, f_end in _fields(buf, start, end):
        if number == _TENSOR_RAW_DATA and wire == _LEN and f_end - payload > INLINE_LIMIT and raw is None:
            raw = (payload, f_end - payload)
        else:
            header += buf[f_start:f_end]
    if raw is None:
        return bytes(buf[start:end])
    tensor = onnx.TensorProto()
    tensor.ParseFromString(bytes(header))
    if tensor.data_location == onnx.TensorProto.EXTERNAL or tensor.external_data:
        raise DecodeError(f"tensor {tensor.name!r} has both raw data and an external-data reference")
    _point(tensor, location, *raw)
    return tensor.SerializeToString()


def _point(tensor: onnx.TensorProto, location: str, offset: int, length: int) -> None:
    """Make ``tensor`` an external-data reference to ``length`` bytes at ``offset``."""
    tensor.ClearField("raw_data")
    del tensor.external_data[:]
    tensor.data_location = onnx.TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", str(offset)), ("length", str(length))):
        tensor.external_data.add(key=key, value=value)


def stubs(model: onnx.ModelProto) -> list[onnx.TensorProto]:
    """The initializers whose data is not in memory (external-data references)."""
    return [t for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]


def span(tensor: onnx.TensorProto, directory: Path, model_name: str) -> Span:
    """Resolve and check where a stub's bytes are (UnusableInputError naming the problem)."""
    info = {entry.key: entry.value for entry in tensor.external_data}
    where = f"{model_name}: tensor {tensor.name!r}"
    location = info.get("location", "")
    if not location or Path(location).is_absolute() or ".." in Path(location).parts:
        raise UnusableInputError(
            f"{where}: external data location {location!r} is not a path inside the model's folder"
        )
    file = directory / location
    try:
        size = os.stat(file).st_size
        if not file.is_file():
            raise UnusableInputError(f"{where}: external data {file} is not a regular file")
        offset = int(info.get("offset", 0))
        length = int(info["length"]) if "length" in info else size - offset
    except OSError as exc:
        raise UnusableInputError(f"{where}: external data {file}: {exc.strerror}") from None
    except ValueError:
        raise UnusableInputError(f"{where}: external data offset/length are not integers") from None
    if offset < 0 or length < 0 or offset + length > size:
        raise UnusableInputError(
            f"{where}: external data {file} is {size} bytes, the tensor needs bytes {offset}..{offset + length} (truncated?)"
        )
    needed = nbytes(tensor)
    if needed is not None and needed != length:
        raise UnusableInputError(f"{where}: {length} bytes of data, but its shape {list(tensor.dims)} needs {needed}")
    return Span(file, offset, length)


#: Packed types: elements per byte (onnx packs sub-byte types; FLOAT6 and unknown types are not checked).
_PACKED = {
    getattr(onnx.TensorProto, name): per_byte
    for name, per_byte in (("INT4", 2), ("UINT4", 2), ("FLOAT4E2M1", 2), ("INT2", 4), ("UINT2", 4))
    if hasattr(onnx.TensorProto, name)
}
_UNCHECKED = {onnx.TensorProto.STRING, onnx.TensorProto.UNDEFINED, getattr(onnx.TensorProto, "FLOAT6E3M2", -1)}


def nbytes(tensor: onnx.TensorProto) -> int | None:
    """Bytes of raw data the tensor's dtype and shape call for (None where not checked)."""
    count = math.prod(tensor.dims)
    if tensor.data_type in _PACKED:
        return -(-count // _PACKED[tensor.data_type])
    if tensor.data_type in _UNCHECKED:
        return None
    try:
        return count * onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    except (KeyError, ValueError, TypeError):  # a type this onnx does not know
        return None


# ------------------------------------------------------------------ verifying


def weightless(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy with every stub turned into a graph input of the same dtype and shape."""
    twin = onnx.ModelProto()
    twin.CopyFrom(model)
    outside = {t.name: t for t in stubs(twin)}
    if not outside:
        return twin
    kept = [t for t in twin.graph.initializer if t.name not in outside]
    del twin.graph.initializer[:]
    twin.graph.initializer.extend(kept)
    declared = {i.name for i in twin.graph.input}
    for name, tensor in outside.items():
        if name not in declared:
            twin.graph.input.append(onnx.helper.make_tensor_value_info(name, tensor.data_type, list(tensor.dims)))
    return twin


# ------------------------------------------------------------------ writing


def write(
    model: onnx.ModelProto, outside: dict[str, Span], handle: int, *, data: tuple[int, str] | None = None
) -> None:
    """Write ``model`` to the open file descriptor ``handle``, copying each stub's bytes.

    ``outside`` says where the stubs' bytes are (``ModelFile.spans``). Without ``data`` they are
    written inline (a single-file model); with ``data = (fd, location)`` they go into
    that open data file, aligned, and the written model points at it. ``model`` is not
    changed.
    """
    shell = onnx.ModelProto()
    shell.CopyFrom(model)
    if data is not None:
        data_fd, location = data
        offset = 0
        for tensor in stubs(shell):
            source = outside[tensor.name]
            offset = -(-offset // ALIGNMENT) * ALIGNMENT
            _copy(source, data_fd, offset)
            _point(tensor, location, offset, source.length)
            offset += source.length
        _write_all(handle, shell.SerializeToString())
        return
    graph = shell.graph
    entries = list(graph.initializer)  # written after the rest of the graph, in their order
    graph.ClearField("initializer")
    # a stub's field up to its raw data (its bytes are copied file to file); an inline tensor
    # is serialized when written, one at a time (fp16's new weights at base: 189 MB)
    heads: list[bytes | None] = []
    graph_bytes = graph.SerializeToString()
    graph_size = len(graph_bytes)
    for tensor in entries:
        if tensor.name not in outside:
            size = tensor.ByteSize()
            heads.append(None)
            graph_size += len(_len_field(_GRAPH_INITIALIZER, size)) + size
            continue
        tensor.ClearField("external_data")
        tensor.ClearField("data_location")
        length = outside[tensor.name].length
        head = tensor.SerializeToString() + _len_field(_TENSOR_RAW_DATA, length)
        heads.append(_len_field(_GRAPH_INITIALIZER, len(head) + length) + head)
        graph_size += len(heads[-1]) + length
    shell.ClearField("graph")
    _write_all(handle, shell.SerializeToString() + _len_field(_MODEL_GRAPH, graph_size) + graph_bytes)
    for tensor, head in zip(entries, heads):
        if head is None:
            body = tensor.SerializeToString()
            _write_all(handle, _len_field(_GRAPH_INITIALIZER, len(body)))
            _write_all(handle, body)
        else:
            _write_all(handle, head)
            _copy(outside[tensor.name], handle, None)


def _write_all(fd: int, payload: bytes) -> None:
    view = memoryview(payload)
    while view:
        view = view[os.write(fd, view) :]


def _copy(source: Span, dst: int, dst_offset: int | None) -> None:
    """Copy a span into ``dst`` (at ``dst_offset``, or at its file position) in the kernel."""
    with open(source.file, "rb") as src:
        done = 0
        while done < source.length:
            count = min(_COPY_CHUNK, source.length - done)
            at = None if dst_offset is None else dst_offset + done
            try:
                moved = os.copy_file_range(src.fileno(), dst, count, source.offset + done, at)
            except OSError:  # no copy_file_range on this file system: copy through a buffer
                chunk = os.pread(src.fileno(), count, source.offset + done)
                moved = os.pwrite(dst, chunk, at) if at is not None else os.write(dst, chunk)
            if moved <= 0:
                raise OSError(f"{source.file} ended early (copied {done} of {source.length} bytes)")
            done += moved
