"""Speech for validation and calibration: the user's own audio files as cases.

The matrix's inputs are noise, which exercises every length and padding but not the
activations speech gives (quantization calibrated or judged on noise can be wrong on
speech). ``validate --audio`` and ``optimize --calibration-audio`` take WAV, FLAC or OGG
files (read with soundfile, libsndfile's maintained binding), mixed to mono and
resampled to the model's 16 kHz with soxr. Optional: the ``[audio]`` extra.

A file longer than ``MAX_SECONDS`` is cut into equal segments no longer (attention's
cost grows with the square of the length; a segment of the matrix's longest input is
enough to judge). Reading is bounded: a file's length is read from its header first,
and a file longer than ``MAX_FILE_SECONDS`` is refused before it is decoded.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hubert_fix import interrupts
from hubert_fix.analysis.convstack import SAMPLE_RATE
from hubert_fix.errors import MissingExtraError, UnusableInputError, install_hint, one_line
from hubert_fix.validation.matrix import Case
from hubert_fix.validation.report import Stored

#: Segments of at most this many seconds (the matrix's longest input).
MAX_SECONDS = 10
#: A shorter file is refused (too short to judge features on).
MIN_SECONDS = 0.1
#: A longer file is refused unread (a 1 h recording would be 230 MB of float32 at 16 kHz).
MAX_FILE_SECONDS = 600


def _libraries() -> tuple[Any, Any]:
    try:
        with interrupts.deferred():  # their native inits are not cut by a Ctrl-C (raised after)
            import soundfile
            import soxr
    except ImportError:
        raise MissingExtraError(
            f"reading audio files needs soundfile and soxr, which are not installed: {install_hint('audio')}"
        ) from None
    return soundfile, soxr


def read_audio(path: Path, *, rate: int = SAMPLE_RATE) -> np.ndarray:
    """``path`` as float32 mono samples at ``rate`` (UnusableInputError naming the file if it cannot be read)."""
    soundfile, soxr = _libraries()
    try:
        with open(path, "rb"):  # missing or unreadable: the OS's reason (libsndfile says "System error")
            pass
        info = soundfile.info(str(path))
        if info.samplerate <= 0 or info.frames <= 0:
            raise UnusableInputError(f"{path}: no audio samples")
        seconds = info.frames / info.samplerate
        if seconds > MAX_FILE_SECONDS:
            raise UnusableInputError(
                f"{path}: {seconds:.0f} s of audio; at most {MAX_FILE_SECONDS} s per file (cut it into shorter files)"
            )
        data, found_rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except UnusableInputError:
        raise
    except OSError as exc:
        raise UnusableInputError(f"{path}: cannot read: {one_line(exc.strerror or exc)}") from None
    except (RuntimeError, ValueError, TypeError) as exc:  # libsndfile's errors (LibsndfileError is a RuntimeError)
        raise UnusableInputError(f"{path}: not an audio file soundfile can read: {one_line(exc)}") from None
    with np.errstate(all="ignore"):  # float files can hold anything: judged below
        mono = data.mean(axis=1, dtype=np.float32)
        if found_rate != rate and np.isfinite(mono).all():
            mono = soxr.resample(mono, found_rate, rate, quality="HQ").astype(np.float32)
    if not np.isfinite(mono).all():  # NaN, inf, or values so large that mixing or resampling overflows
        raise UnusableInputError(f"{path}: NaN or infinite samples")
    return np.ascontiguousarray(mono)


def equal_segments(samples: np.ndarray, longest: int) -> list[np.ndarray]:
    """``samples`` cut into the fewest equal segments of at most ``longest`` samples (no short tail)."""
    count = -(-len(samples) // longest)
    size = -(-len(samples) // count)
    return [samples[index * size : (index + 1) * size] for index in range(count)]


def audio_cases(paths: Sequence[Path], *, rate: int = SAMPLE_RATE) -> Stored:
    """Each file as unpadded batch-1 cases of at most ``MAX_SECONDS`` (outputs to be computed)."""
    stored: Stored = []
    for path in paths:
        samples = read_audio(path, rate=rate)
        if len(samples) < MIN_SECONDS * rate:
            raise UnusableInputError(f"{path}: {len(samples) / rate:.3f} s of audio; at least {MIN_SECONDS} s")
        pieces = equal_segments(samples, MAX_SECONDS * rate)
        count = len(pieces)
        for index, piece in enumerate(pieces):
            part = f", segment {index + 1}/{count}" if count > 1 else ""
            case = Case(f"audio {path.name}{part}", (len(piece),))
            stored.append((case, piece[None, :], np.zeros((1, len(piece)), dtype=bool), None))
    return stored
