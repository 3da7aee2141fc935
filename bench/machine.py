"""The machine a run measures: its CPU, instruction-set flags and one core's FMA peak."""

from __future__ import annotations

import platform
from pathlib import Path


def _isa() -> list[str]:
    """The CPU's vector and matrix features that ONNX Runtime's and PyTorch's kernels choose by."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = line.split(":", 1)[1].split()
                wanted = ("avx2", "fma", "f16c", "avx512", "vnni", "amx", "bf16")
                return sorted(f for f in flags if any(w in f for w in wanted))
    except OSError:
        pass
    return []


#: Latency of the deployment variants: the 10 s input and the short chunks real-time voice conversion feeds.


def _peak_gflops() -> float | None:
    """One core's fp32 FMA peak from the CPU's flags and clock: 2 FMA units x lanes x 2 FLOP x GHz
    (AVX-512: 16 lanes, AVX2: 8); None where the clock cannot be read."""
    try:
        mhz = max(
            float(line.split(":")[1])
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("cpu MHz")
        )
    except (OSError, ValueError):
        return None
    lanes = 16 if "avx512f" in _isa() else 8 if "avx2" in _isa() else 4
    return round(2 * lanes * 2 * mhz / 1e3, 1)


def _cpu_name() -> str:
    """The CPU model with its family and model numbers (Linux /proc/cpuinfo: a virtual machine's
    name may be just "AMD EPYC", whose generations differ by their family: 25 Zen 3/4, 26 Zen 5),
    else what platform knows."""
    try:
        fields: dict[str, str] = {}
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        fields = {}
    if "model name" not in fields:
        return platform.processor() or platform.machine()
    numbers = f" (family {fields['cpu family']}, model {fields['model']})" if "cpu family" in fields else ""
    return fields["model name"] + numbers
