"""The process heap under large models: freed memory handed back to the OS (glibc keeps it otherwise).

ONNX Runtime's sessions here run without their arena (``session``), so each activation is
a ``malloc`` and a ``free``. glibc serves a block of 128 KiB or more with its own mapping
at first, but raises that threshold to the size of each such block freed (up to 32 MiB),
after which activations come from the heap and stay in it when freed. Fixed at 16 MiB,
the feature extractor's activations (100-400 MB at the matrix's longest cases) are
unmapped when freed and the transformer's smaller ones reuse the heap. Measured at base
(``validate`` of the optimized fp32 model over the matrix, 4 runs each, AMD EPYC, 2 busy
cores): peak RSS 997-1141 MB with glibc's default, 919-997 MB at 16 MiB with the same CPU
time (23.8-25.2 s against 23.5-25.8 s); 1 MiB gave 864-874 MB but 35% more CPU time
(page faults). Neither call changes what is computed (the outputs are bit-identical);
on a C library other than glibc both do nothing.
"""

from __future__ import annotations

import ctypes
import gc

#: mallopt's parameter number for the mmap threshold (glibc's malloc.h).
_M_MMAP_THRESHOLD = -3
#: Blocks of this size and more get their own mapping, unmapped when freed.
MAPPED_FROM = 16 << 20


def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


def map_large_allocations() -> None:
    """Serve blocks of ``MAPPED_FROM`` bytes and more from their own mappings from now on."""
    libc = _libc()
    if libc is not None:
        libc.mallopt(_M_MMAP_THRESHOLD, MAPPED_FROM)


def release_memory() -> None:
    """Collect, and hand freed heap pages back to the OS."""
    gc.collect()
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
