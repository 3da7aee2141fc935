"""The validation matrix is derived from the conv stack, and hits the edge lengths."""

from __future__ import annotations

import numpy as np
import pytest

from hubert_fix.analysis.convstack import frames, min_samples, mod_zero_samples
from hubert_fix.validation.matrix import cases

BASE = ((10, 5),) + ((3, 2),) * 4 + ((2, 2),) * 2  # fairseq's default conv_feature_layers
ODD = ((7, 3), (5, 2))


def brute_frames(samples: int, stack) -> int:
    """Frames by literally sliding each kernel: the definition, not the formula."""
    length = samples
    for kernel, stride in stack:
        length = len(range(0, length - kernel + 1, stride)) if length >= kernel else 0
    return length


@pytest.mark.parametrize("stack", [BASE, ODD])
def test_frames_matches_sliding_windows(stack) -> None:
    for samples in [0, 1, 9, 10, 399, 400, 401, 719, 720, 1234, 16000, 16100]:
        assert frames(samples, stack) == brute_frames(samples, stack)


@pytest.mark.parametrize("stack", [BASE, ODD])
@pytest.mark.parametrize("n", [1, 2, 32, 49, 768])
def test_min_samples_is_the_shortest_input(stack, n) -> None:
    shortest = min_samples(stack, n)
    assert frames(shortest, stack) == n
    assert frames(shortest - 1, stack) == n - 1


def test_known_hubert_base_lengths() -> None:
    # 400 samples (25 ms) is HuBERT base's receptive field; 16100 samples give 50 frames.
    assert min_samples(BASE, 1) == 400
    assert frames(16100, BASE) == 50 and 16100 % 50 == 0
    assert mod_zero_samples(BASE, 16000) == 16023  # 49 frames, 16023 = 49 * 327


@pytest.mark.parametrize("stack", [BASE, ODD])
@pytest.mark.parametrize("at_least", [0, 500, 16000])
def test_mod_zero_samples_is_the_first_such_length_or_none(stack, at_least) -> None:
    found = mod_zero_samples(stack, at_least)
    limit = found if found is not None else at_least + 20000
    for samples in range(at_least, limit):
        count = frames(samples, stack)
        assert count < 2 or samples % count != 0
    if found is not None:
        assert found >= at_least and frames(found, stack) > 1 and found % frames(found, stack) == 0


@pytest.mark.parametrize("stack,width", [(BASE, 32), (BASE, 768), (ODD, 16)])
def test_matrix_covers_the_edges(stack, width) -> None:
    matrix = cases(stack, width)
    counts = [(c.samples, c.expected_frames(stack)) for c in matrix]
    assert (min_samples(stack, 1), 1) in counts
    assert any(f > 1 and s % f == 0 for s, f in counts)  # exists for these stacks at small sizes
    assert any(f == width for _, f in counts)
    assert {c.batch for c in matrix} == {1, 2, 3}
    assert any(len(set(c.lengths)) == c.batch == 3 for c in matrix)
    assert any(c.samples == 160000 for c in matrix)
    assert not any(c.samples == 160000 for c in cases(stack, width, full=False))


def test_inputs_pad_each_row_after_its_length() -> None:
    case = cases(BASE, 32)[-2]  # batch of 3 with different lengths
    source, mask = case.inputs()
    assert source.dtype == np.float32 and mask.dtype == np.bool_
    for row, length in enumerate(case.lengths):
        assert not mask[row, :length].any() and mask[row, length:].all()
        assert not source[row, length:].any() and source[row, :length].any()
    again, _ = case.inputs()
    assert np.array_equal(source, again)
