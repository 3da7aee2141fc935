"""The optional [export] extra (torch + fairseq), imported only where it is needed.

The repair path never imports torch or fairseq; ``export``, ``validate --checkpoint``
and ``demo`` reach them through ``require`` first, so a missing extra is one clear error.
This package's own ``__init__`` imports neither.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any

import numpy as np

from hubert_fix import interrupts
from hubert_fix.errors import MissingExtraError, install_hint


def require() -> None:
    """Import the export modules (torch and fairseq with them), or MissingExtraError naming what to install.

    Call it before importing ``hubert_fix.exporter.loading``, ``.modules`` or ``.trace``.
    """
    try:
        with interrupts.deferred():  # torch's and fairseq's import-time code is not cut by a Ctrl-C (raised after)
            from hubert_fix.exporter import trace  # noqa: F401 - imports loading and modules too
    except ImportError as exc:
        absent = [name for name in ("torch", "fairseq") if importlib.util.find_spec(name) is None]
        root = (exc.name or "").split(".")[0]
        missing = " and ".join(absent) if absent else f"fairseq's dependency {root or exc.name}"
        raise MissingExtraError(
            f"this needs torch and fairseq (the [export] extra); {missing} {'are' if ' and ' in missing else 'is'} "
            f"not installed: {install_hint('export', pin='torch==2.13.0 ')} (pin torch: an unpinned one can pull a "
            "multi-GB CUDA build; use the version your platform has a CPU build of)"
        ) from None


def pytorch_reference(
    model: Any, *, output_layer: int | None, fp16: bool, device: str, final_proj: bool = False
) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """fairseq's PyTorch features for (source, padding_mask), as validation's reference."""
    require()
    from hubert_fix.exporter import modules

    def features(source: np.ndarray, padding_mask: np.ndarray) -> np.ndarray:
        return modules.reference_features(
            model, source, padding_mask, output_layer=output_layer, fp16=fp16, device=device, final_proj=final_proj
        )

    return features
