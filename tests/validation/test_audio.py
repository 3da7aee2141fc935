"""Speech as validation cases (``validate --audio``, ``optimize --calibration-audio``): the
files are read, mixed to mono, resampled to 16 kHz and cut into segments of at most 10 s;
a file that cannot be read is one clear line, exit 2. The tests write their own audio."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import CASES, CHECKPOINT, RAW, run_main
from speech import speech_like as speech

soundfile = pytest.importorskip("soundfile")
pytest.importorskip("soxr")

from hubert_fix.validation import audio  # noqa: E402


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("audio")
    made = {
        "wav44k": (folder / "a.wav", speech(1.5, 44100), 44100),
        "flac_stereo": (folder / "b.flac", np.stack([speech(1, 16000, 1), speech(1, 16000, 2)], 1), 16000),
        "long": (folder / "long.ogg", speech(23, 16000, 3), 16000),
    }
    for path, data, rate in made.values():
        soundfile.write(path, data, rate)
    return {key: path for key, (path, _, _) in made.items()}


def test_resampled_mono_float32(files: dict[str, Path]) -> None:
    samples = audio.read_audio(files["wav44k"])
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert abs(len(samples) - 24000) <= 1  # 1.5 s at 16 kHz
    expected = speech(1.5, 16000)  # the same sound synthesized at 16 kHz
    spectrum = np.abs(np.fft.rfft(samples[: len(expected)]))
    reference = np.abs(np.fft.rfft(expected[: len(samples)]))
    assert np.corrcoef(spectrum, reference)[0, 1] > 0.95  # the same harmonics, not aliasing


def test_stereo_is_mixed_to_mono(files: dict[str, Path]) -> None:
    samples = audio.read_audio(files["flac_stereo"])
    both = (speech(1, 16000, 1) + speech(1, 16000, 2)) / 2
    assert samples.shape == (16000,) and np.abs(samples - both).max() < 1e-3  # FLAC is 16-bit


def test_long_files_become_equal_segments(files: dict[str, Path]) -> None:
    cases = audio.audio_cases([files["long"], files["wav44k"]])
    names = [case.name for case, *_ in cases]
    assert names == ["audio long.ogg, segment 1/3", "audio long.ogg, segment 2/3", "audio long.ogg, segment 3/3",
                     "audio a.wav"]  # fmt: skip
    lengths = [case.samples for case, *_ in cases[:3]]
    assert sum(lengths) == 23 * 16000 and max(lengths) - min(lengths) <= 1 and max(lengths) <= 10 * 16000
    for case, source, mask, outputs in cases:
        assert source.shape == mask.shape == (1, case.samples) and not mask.any() and outputs is None


def test_validate_compares_speech_with_the_checkpoint(files: dict[str, Path], repaired_raw: Path) -> None:
    pytest.importorskip("fairseq")
    code, out, err = run_main(
        "validate",
        repaired_raw,
        "--checkpoint",
        CHECKPOINT,
        "--quick",
        "--audio",
        files["wav44k"],
        "--audio",
        files["flac_stereo"],
        "--json",
    )
    assert code == 0, err
    speech_cases = [c for c in json.loads(out)["cases"] if c["name"].startswith("audio ")]
    assert [c["name"] for c in speech_cases] == ["audio a.wav", "audio b.flac"]
    assert all(c["ok"] and c["compared"] and c["cosine"] > 0.9999 for c in speech_cases)


def test_validate_runs_speech_with_stored_cases(files: dict[str, Path], repaired_raw: Path) -> None:
    code, out, err = run_main("validate", repaired_raw, "--reference", CASES, "--audio", files["wav44k"], "--json")
    cases = {c["name"]: c for c in json.loads(out)["cases"]}
    assert code == 0, err
    assert cases["audio a.wav"]["ok"] and cases["audio a.wav"]["shape"] == [1, 74, 32]
    assert not cases["audio a.wav"]["compared"]  # the reference file has no output for it: it ran


@pytest.mark.parametrize(
    ("content", "problem"),
    [(None, "cannot read"), (b"RIFF\x00\x00\x00\x00WAVEjunk", "not an audio file"), (b"", "not an audio file")],
)
def test_unreadable_audio_is_one_line(tmp_path: Path, content: bytes | None, problem: str) -> None:
    path = tmp_path / "speech.wav"
    if content is not None:
        path.write_bytes(content)
    code, _, err = run_main("validate", RAW, "--audio", path)
    assert code == 2 and err.count("\n") == 1 and str(path) in err and problem in err, err


def test_too_short_too_long_and_not_finite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    short, bad, long = tmp_path / "short.wav", tmp_path / "nan.wav", tmp_path / "long.wav"
    huge = tmp_path / "huge.wav"  # finite, but resampling overflows (found by fuzzing the reader)
    soundfile.write(short, speech(0.05, 16000), 16000)
    soundfile.write(bad, np.full(1600, np.nan, np.float32), 16000, subtype="FLOAT")
    soundfile.write(huge, np.resize(np.float32([3e38, -3e38]), 4410), 44100, subtype="FLOAT")
    soundfile.write(long, speech(3, 16000), 16000)
    monkeypatch.setattr(audio, "MAX_FILE_SECONDS", 2)
    cases = [(short, "at least 0.1 s"), (bad, "NaN"), (huge, "NaN or infinite"), (long, "at most 2 s per file")]
    for path, problem in cases:
        code, _, err = run_main("validate", RAW, "--audio", path)
        assert code == 2 and err.count("\n") == 1 and str(path) in err and problem in err, err


def test_without_the_libraries_the_error_names_the_extra(
    files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "soxr", None)
    code, _, err = run_main("validate", RAW, "--audio", files["wav44k"])
    assert code == 2 and "pip install -e '.[audio]' in the hubert-fix checkout" in err and err.count("\n") == 1


def test_a_fixed_length_model_skips_audio_of_another_length(files: dict[str, Path], tmp_path: Path) -> None:
    from conftest import FIXTURES

    fixed = tmp_path / "static.onnx"
    assert run_main("repair", FIXTURES / "hubert_base_tiny.static.raw.onnx", "-o", fixed)[0] == 0
    code, out, err = run_main("validate", fixed, "--audio", files["wav44k"], "--json")
    report = json.loads(out)
    assert code == 0, err
    assert not any(c["name"].startswith("audio ") for c in report["cases"])
    assert any(
        s.startswith("audio a.wav (batch 1, 24000 samples): the model's input length is fixed")
        for s in report["skipped"]
    )
