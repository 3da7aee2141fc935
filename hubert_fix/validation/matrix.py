"""The validation input matrix, derived from the model's conv feature extractor.

Naive repairs break at particular lengths, and those lengths depend on the conv stack
(kernel and stride of each layer), so they are computed here, never hard-coded:

- the shortest input that gives exactly 1 frame;
- lengths where ``samples % frames == 0`` (HuBERT's trace-frozen ``[:, :-extra]`` slice
  then becomes empty);
- the length where ``frames == C`` (the misaligned Where then runs and, with padding,
  corrupts silently);
- typical 1 s and 10 s inputs, and batches of 2 and 3 with different padding;
- 2 s, longer than a 1 s trace example: a length the trace froze (a padded length
  ``K - T``) truncates it; the 10 s input shows it too, but ``--quick`` leaves that out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hubert_fix.analysis.convstack import SAMPLE_RATE, ConvStack, frames, min_samples, mod_zero_samples


@dataclass(frozen=True)
class Case:
    """One validation input: per-item real lengths, padded to ``padded_to`` (default: the longest)."""

    name: str
    lengths: tuple[int, ...]
    padded_to: int | None = None

    @property
    def samples(self) -> int:
        return max(self.lengths) if self.padded_to is None else self.padded_to

    @property
    def batch(self) -> int:
        return len(self.lengths)

    @property
    def padded(self) -> bool:
        """True when some item is shorter than the input: only a mask can say so."""
        return min(self.lengths) < self.samples

    def expected_frames(self, stack: ConvStack) -> int:
        return frames(self.samples, stack)

    def inputs(self, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """``source`` float32 [B, samples] (zeros past each length) and ``padding_mask`` bool."""
        rng = np.random.default_rng([seed, self.batch, self.samples])
        source = np.zeros((self.batch, self.samples), dtype=np.float32)
        padding_mask = np.ones((self.batch, self.samples), dtype=bool)
        for row, length in enumerate(self.lengths):
            source[row, :length] = rng.standard_normal(length).astype(np.float32) * 0.1
            padding_mask[row, :length] = False
        return source, padding_mask


def cases(stack: ConvStack, embed_dim: int | None, *, full: bool = True) -> list[Case]:
    """The matrix for a model with this conv stack and encoder width ``embed_dim`` (C).

    ``full=False`` leaves out the 10 s input (for quick checks); ``embed_dim=None`` (C
    unknown) leaves out the frames == C cases.
    """
    one_frame = min_samples(stack, 1)
    second = SAMPLE_RATE
    mod_zero_1s = mod_zero_samples(stack, second)
    mod_zero = [n for n in (mod_zero_samples(stack, 0), mod_zero_1s) if n is not None]
    matrix = [Case("1 frame (shortest input)", (one_frame,))]
    matrix += [Case(f"samples % frames == 0 ({frames(n, stack)} frames)", (n,)) for n in sorted(set(mod_zero))]
    if embed_dim:
        frames_eq_c = min_samples(stack, embed_dim)
        matrix += [
            Case(f"frames == C ({embed_dim})", (frames_eq_c,)),
            # One utterance padded to a fixed size: the raw export runs here and silently
            # zeroes channels instead of frames.
            Case(f"frames == C ({embed_dim}), batch 1 padded", ((frames_eq_c * 3) // 4,), padded_to=frames_eq_c),
        ]
    matrix += [Case("1 s", (second,)), Case("2 s", (2 * second,))]
    if full:
        matrix.append(Case("10 s", (10 * second,)))
    longest = mod_zero_1s or second  # padded to a samples % frames == 0 length where there is one
    matrix += [
        Case("batch 2, padded", (second, (second * 9) // 16)),
        Case(f"batch 3, padded, {longest} samples", (longest, (longest * 3) // 4, one_frame)),
    ]
    if embed_dim:
        frames_eq_c = min_samples(stack, embed_dim)
        matrix.append(Case(f"batch 2, frames == C ({embed_dim}), padded", (frames_eq_c, frames_eq_c // 2)))
    return matrix


def unpadded_batches(samples: int) -> list[Case]:
    """Batches of 2 and 3 equal-length utterances: what a model without a mask input admits."""
    return [Case(f"batch {n}, unpadded, {samples} samples", (samples,) * n) for n in (2, 3)]


def static_cases(batch: int, samples: int) -> list[Case]:
    """Cases for a model exported with a fixed input shape [batch, samples].

    The matrix's lengths do not fit such a model; what can be checked is the full shape,
    and the same shape with the utterances padded to it.
    """
    full = Case(f"static shape [{batch}, {samples}]", (samples,) * batch)
    shorter = tuple(samples - (samples * (row + 1)) // (2 * (batch + 1)) for row in range(batch))
    return [full, Case(f"static shape [{batch}, {samples}], padded", shorter, padded_to=samples)]
