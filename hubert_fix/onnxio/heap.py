"""The process heap under large models: freed memory handed back to the OS (glibc keeps it otherwise).

ONNX Runtime's sessions here run without their arena (``session``), so each activation is
a ``malloc`` and a ``free``. glibc serves a block of 128 KiB or more with its own mapping
at first, but raises that threshold to the size of each such block freed (up to 32 MiB),
after which activations come from the heap and stay in it when freed, and the heap grows
past what is live. Fixed at 1 MiB, every activation of that size is unmapped when freed.
Measured at base on an AMD EPYC with both cores busy (peak RSS of the whole process, as
``bench/run.py`` measures it for each precision): ``optimize`` fp32 1057-1244 MB with
glibc's default against 877-887 MB (2.3x the file) at 1 MiB, CPU time 56-61 s against
62-68 s; at 4 MiB 1099 MB, at 16 MiB 1223-1295 MB (the reference session's peak). So
1 MiB: the peak becomes what is live, for about a tenth more CPU time in validation.
Neither call changes what is computed (allocation only: the outputs are bit-identical,
``tests/onnxio/test_session.py``); on a C library other than glibc both do nothing.
"""

from __future__ import annotations

import ctypes
import gc

#: mallopt's parameter number for the mmap threshold (glibc's malloc.h).
_M_MMAP_THRESHOLD = -3
#: Blocks of this size and more get their own mapping, unmapped when freed.
MAPPED_FROM = 1 << 20


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
