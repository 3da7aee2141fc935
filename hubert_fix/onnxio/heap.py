"""The process heap under large models: freed memory handed back to the OS (glibc keeps it otherwise).

ONNX Runtime's sessions here run without their arena (``session``), so each activation is
a ``malloc`` and a ``free``. glibc serves a block of 128 KiB or more with its own mapping
at first, but raises that threshold to the size of each such block freed (up to 32 MiB),
after which activations come from the heap and stay in it when freed, and the heap grows
past what is live. Fixed at 1 MiB, every activation of that size is unmapped when freed.
Measured at base on an AMD EPYC with both cores busy (peak RSS of the whole process, as
``bench/run.py`` measures it for each precision; MB of 10^6 bytes): ``optimize`` fp32
1108-1304 MB with glibc's default against 920-930 MB (2.4-2.5x the file) at 1 MiB, CPU
time 56-61 s against 62-68 s; at 4 MiB 1152 MB, at 16 MiB 1282-1358 MB (the reference
session's peak). So
1 MiB: the peak becomes what is live, for about a tenth more CPU time in validation.
Neither call changes what is computed (allocation only: the outputs are bit-identical,
``tests/onnxio/test_session.py``); on a C library other than glibc both do nothing.

OpenVINO maps an IR's weights file into memory and its CPU plugin, once it has converted
and repacked the weights (at compile time and the first inference), reads little of it
again, but the pages it read stay in the process: ``page_out`` hands them back (at base,
bf16: a bare compile plus the largest case 1129 MB, 771 MB with the pages handed back
after the first inference, bit-identical outputs).
"""

from __future__ import annotations

import ctypes
import gc
import os
from collections.abc import Iterable

#: mallopt's parameter number for the mmap threshold (glibc's malloc.h).
_M_MMAP_THRESHOLD = -3
#: Blocks of this size and more get their own mapping, unmapped when freed.
MAPPED_FROM = 1 << 20
#: madvise's advice to reclaim a range's pages now (Linux 5.4): a clean file page is dropped,
#: and read again from its file if it is touched again.
_MADV_PAGEOUT = 21


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


def page_out(paths: Iterable[str]) -> None:
    """Hand back the pages of this process's read-only mappings of the files ``paths``: what is
    touched again is read again from the file, so nothing computed changes. Linux with glibc
    only (elsewhere, or on a kernel without the advice, nothing happens)."""
    libc = _libc()
    wanted = {os.path.realpath(path) for path in paths}
    if libc is None or not wanted:
        return
    try:
        with open("/proc/self/maps") as maps:
            lines = maps.readlines()
    except OSError:
        return
    for line in lines:
        fields = line.split(maxsplit=5)
        if len(fields) < 6 or fields[5].rstrip("\n") not in wanted or "w" in fields[1]:
            continue
        low, high = (int(bound, 16) for bound in fields[0].split("-"))
        libc.madvise(ctypes.c_void_p(low), ctypes.c_size_t(high - low), _MADV_PAGEOUT)
