"""The fuzz input format: a model alone, or a model and the ``weights.bin`` beside it.

Plain bytes are ``model.onnx``. Bytes that start with ``HFXS`` + a little-endian uint32 N
are split: N bytes of ``model.onnx``, the rest as ``weights.bin`` beside it, so
external-data stubs (``location: weights.bin``) are reached. ``make_corpus.py`` writes
seeds in both forms.
"""

from __future__ import annotations

import struct

MAGIC = b"HFXS"
SIDE_NAME = "weights.bin"


def pack(model: bytes, side: bytes | None = None) -> bytes:
    """One fuzz input: the model alone, or model + side file ``weights.bin``."""
    if side is None:
        return model
    return MAGIC + struct.pack("<I", len(model)) + model + side


def unpack(data: bytes) -> tuple[bytes, bytes | None]:
    if len(data) >= 8 and data[:4] == MAGIC:
        (size,) = struct.unpack("<I", data[4:8])
        return data[8 : 8 + size], data[8 + size :]
    return data, None
