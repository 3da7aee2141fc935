"""Frame counts of a conv feature extractor: (kernel, stride) per layer, input first."""

from __future__ import annotations

ConvStack = tuple[tuple[int, int], ...]  # (kernel, stride) per conv layer, input first

#: Samples per second of the audio these encoders take, unless the export recorded another
#: (``metadata.SAMPLE_RATE``, read by ``interface.describe``): every fairseq speech encoder here
#: was trained at 16 kHz.
SAMPLE_RATE = 16000


def frames(samples: int, stack: ConvStack) -> int:
    """Number of output frames for ``samples`` input samples (no padding, dilation 1)."""
    length = samples
    for kernel, stride in stack:
        if length < kernel:
            return 0
        length = (length - kernel) // stride + 1
    return length


def min_samples(stack: ConvStack, n_frames: int) -> int:
    """The shortest input giving exactly ``n_frames`` frames (inverse of ``frames``)."""
    length = n_frames
    for kernel, stride in reversed(stack):
        length = (length - 1) * stride + kernel
    return length


def mod_zero_samples(stack: ConvStack, at_least: int, search: int = 10_000) -> int | None:
    """The shortest length >= ``at_least`` with more than one frame and samples % frames == 0.

    Such lengths need not exist for every stack and size (with a large receptive field
    they stop existing past some frame count), so the search looks at most ``search``
    frame counts ahead and returns None when there is none.
    """
    first = max(2, frames(at_least, stack))
    for count in range(first, first + search):
        low = max(at_least, min_samples(stack, count))
        high = min_samples(stack, count + 1) - 1  # the longest input giving ``count`` frames
        candidate = -(-low // count) * count  # the first multiple of ``count`` >= low
        if candidate <= high:
            return candidate
    return None
