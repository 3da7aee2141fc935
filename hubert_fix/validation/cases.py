"""The cases a validation runs: the matrix a model's interface admits, or stored cases
with their reference outputs (``.npz``, ``--reference``).
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np

from hubert_fix.analysis.convstack import SAMPLE_RATE
from hubert_fix.analysis.interface import Interface
from hubert_fix.errors import UnusableInputError, argument, one_line
from hubert_fix.validation.matrix import Case, cases, static_cases, unpadded_batches
from hubert_fix.validation.report import Stored


def load_reference_cases(path: Path) -> list[tuple[Case, np.ndarray, np.ndarray, np.ndarray]]:
    """Stored cases: ``case{i}.name/.source/.padding_mask/.features`` arrays in an .npz."""
    try:
        data = np.load(path, allow_pickle=False)
        stored = []
        index = 0
        while f"case{index}.source" in data:
            source = data[f"case{index}.source"]
            mask = data[f"case{index}.padding_mask"]
            lengths = tuple(int(n) for n in (~mask).sum(axis=1))
            case = Case(str(data[f"case{index}.name"]), lengths, padded_to=int(mask.shape[1]))
            stored.append((case, source, mask, data[f"case{index}.features"]))
            index += 1
    except OSError as exc:
        raise UnusableInputError(f"{path}: cannot read: {one_line(exc.strerror or exc)}") from None
    except (ValueError, KeyError, EOFError, zipfile.BadZipFile):
        raise UnusableInputError(
            f"{path}: not a reference file written by hubert-fix (an .npz of case0.source, case0.padding_mask, "
            f"case0.features, ...); write one with hubert_fix.validation.cases.save_reference_cases, or give {argument('checkpoint')}"
        ) from None
    if not stored:
        raise UnusableInputError(f"{path}: no cases (expected case0.source, case0.padding_mask, case0.features)")
    return stored


def save_reference_cases(path: Path, stored: Stored) -> None:
    """Write cases in the format ``load_reference_cases`` reads (``--reference CASES.npz``).

    Like ``np.savez_compressed``, but each member gets a fixed timestamp, so the file's
    bytes (and sha256) depend on the data only.
    """
    arrays: dict[str, np.ndarray] = {}
    for index, (case, source, padding_mask, features) in enumerate(stored):
        arrays.update({
            f"case{index}.name": np.array(case.name), f"case{index}.source": source,
            f"case{index}.padding_mask": padding_mask, f"case{index}.features": features,
        })  # fmt: skip
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for key, value in arrays.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.asanyarray(value), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, buffer.getvalue())


def plan_cases(face: Interface, *, quick: bool, stored: Stored | None, audio: Stored = ()) -> tuple[Stored, list[str]]:
    """The cases to run (the stored ones, or the matrix, then ``audio``'s) that the interface admits, and the skipped ones."""
    if stored is None:
        if face.samples is not None:  # a fixed length: that length, in every batch the model admits
            if face.batch is not None:
                matrix = static_cases(face.batch, face.samples)
            else:
                samples = face.samples
                matrix = [Case(f"static length {samples}", (samples,)), *unpadded_batches(samples)]
                matrix.append(static_cases(2, samples)[1])  # the same length, padded
        else:
            matrix = cases(face.stack, face.width, full=not quick)
            if face.mask is None:
                matrix += unpadded_batches(SAMPLE_RATE)
            if face.batch not in (None, 1):
                matrix += [Case(f"batch {face.batch}, unpadded, {SAMPLE_RATE} samples", (SAMPLE_RATE,) * face.batch)]
        stored = [(case, *case.inputs(), None) for case in matrix]
    elif quick:
        stored = [entry for entry in stored if entry[0].samples < 10 * SAMPLE_RATE]
    kept, skipped = [], []
    for entry in [*stored, *audio]:
        case = entry[0]
        why = face.refusal(case.batch, case.samples, case.padded)
        if why:
            skipped.append(f"{case.name} (batch {case.batch}, {case.samples} samples): {why}")
        else:
            kept.append(entry)
    return kept, skipped
