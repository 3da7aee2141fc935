"""A model's own outputs as the reference (``optimize`` compares a candidate with the model it came
from): its first output on CPU for every case of the matrix it admits."""

from __future__ import annotations

import numpy as np

from hubert_fix.analysis.interface import Interface
from hubert_fix.errors import UnusableInputError
from hubert_fix.onnxio.heap import release_memory
from hubert_fix.onnxio.reading import ModelFile
from hubert_fix.onnxio.session import ORT_ERRORS, create_session, ort_message
from hubert_fix.validation.cases import plan_cases
from hubert_fix.validation.report import Stored


def reference_outputs(loaded: ModelFile, face: Interface, *, quick: bool, name: str, audio: Stored) -> Stored:
    """The input model's first output on CPU for every case of the matrix it admits, then for ``audio``'s."""
    entries, _ = plan_cases(face, quick=quick, stored=None, audio=audio)
    session = create_session(str(loaded.source), name, device="cpu")
    stored: Stored = []
    for case, source, mask, _ in entries:
        try:
            output = session.run(None, face.feeds(source, mask))[0]
        except ORT_ERRORS as exc:
            raise UnusableInputError(
                f"{name}: the input model fails on {case.name}: {ort_message(exc)}; run hubert-fix validate {name}"
            ) from None
        # a copy: ORT's array keeps the session's buffers alive through the candidate's validation
        stored.append((case, source, mask, np.array(output, dtype=np.float32)))
    del session
    release_memory()  # the reference's weights and buffers leave before the candidate's arrive
    return stored
