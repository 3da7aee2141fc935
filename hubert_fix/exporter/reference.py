"""A fairseq checkpoint as the reference a model is validated against: which file, how to read
it, what of it the model is (``Checkpoint``), and fairseq's features for a model's inputs.

torch and fairseq are imported only when a reference is built (``require``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from hubert_fix import metadata
from hubert_fix.analysis.interface import Interface
from hubert_fix.errors import UnusableInputError
from hubert_fix.exporter import pytorch_reference, require
from hubert_fix.onnxio.outputs import read_files
from hubert_fix.onnxio.reading import ModelFile

StrPath = str | PathLike[str]
#: fairseq's outputs for (source, padding_mask)
Reference = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Checkpoint:
    """A fairseq checkpoint (the [export] extra) and how to take it.

    ``trust_checkpoint``: unpickle without torch's weights_only allowlist (only for files you
    trust); ``dict_dir``: the folder of a CTC fine-tune's ``dict.ltr.txt`` when the checkpoint
    lacks it; ``output_layer`` (1-based) and ``final_proj``: what of the model the features
    are (None: what the export recorded, else the last layer, no final_proj).
    """

    path: StrPath
    trust_checkpoint: bool = False
    dict_dir: StrPath | None = None
    output_layer: int | None = None
    final_proj: bool | None = None

    @classmethod
    def given(cls, value: StrPath | Checkpoint | None) -> Checkpoint | None:
        """A path as the checkpoint with defaults; a Checkpoint as it is; None as None."""
        return value if value is None or isinstance(value, Checkpoint) else cls(value)

    @property
    def file(self) -> Path:
        return Path(self.path)

    @property
    def vocabulary_dir(self) -> Path | None:
        return Path(self.dict_dir) if self.dict_dir is not None else None

    def reads(self) -> list[Path]:
        """The files it reads: the checkpoint, and the vocabularies in ``dict_dir``."""
        return read_files(files=[self.file], dict_dir=self.vocabulary_dir)

    def load(self, vocabulary: list[str] | None = None) -> Any:
        """The fairseq model (MissingExtraError without the [export] extra)."""
        require()
        from hubert_fix.exporter import loading

        return loading.load_checkpoint(
            self.file, trust=self.trust_checkpoint, dict_dir=self.vocabulary_dir, vocabulary=vocabulary
        )


def checkpoint_reference(source: Checkpoint, loaded: ModelFile, face: Interface, *, device: str) -> Reference:
    """fairseq's features for the model's inputs, as the export recorded them (layer, final_proj,
    fp16 inputs); a checkpoint of another architecture than the model's is refused (exit 2)."""
    meta = metadata.read(loaded.proto)
    model = source.load(vocabulary=_recorded_vocabulary(meta))
    layer = (
        source.output_layer if source.output_layer is not None else int(meta.get(metadata.OUTPUT_LAYER) or 0) or None
    )
    _same_architecture(source.file, loaded, face, meta, model, layer)
    fp16 = face.audio.dtype == np.float16  # an fp16 export; an fp16-optimized model takes float32 audio
    project = source.final_proj if source.final_proj is not None else meta.get(metadata.FINAL_PROJ) == "1"
    device = _torch_device(device) if fp16 else "cpu"
    return pytorch_reference(model, output_layer=layer, fp16=fp16, device=device, final_proj=project)


def _recorded_vocabulary(meta: dict[str, str]) -> list[str] | None:
    """The CTC symbols our export recorded in the model (None when absent or unreadable)."""
    try:
        symbols = json.loads(meta.get(metadata.VOCABULARY) or "null")
    except ValueError:
        return None
    return symbols if isinstance(symbols, list) and all(isinstance(s, str) for s in symbols) else None


def _same_architecture(
    checkpoint: Path, loaded: ModelFile, face: Interface, meta: dict[str, str], model: Any, layer: int | None
) -> None:
    """A checkpoint that differs from the model in kind, output, depth, width or conv stack
    cannot be its source: exit 2 with the differences, not a run of failed cases. ``layer``:
    the layer the model ends at (the caller's, or what the export recorded)."""
    from hubert_fix.exporter import modules

    differences = []
    kind = type(model).__name__
    if meta.get(metadata.MODEL) and meta[metadata.MODEL] != kind:
        differences.append(f"a {kind} vs the model's {meta[metadata.MODEL]}")
    ctc = hasattr(model, "_hubert_fix_ctc")
    if ctc != face.ctc:
        what = {True: "CTC logits", False: "encoder features"}
        differences.append(f"it gives {what[ctc]}, the model {what[face.ctc]}")
    stack = modules.conv_stack(model)
    if tuple(map(tuple, stack)) != tuple(map(tuple, face.stack)):
        differences.append(f"conv stack {list(map(list, stack))} vs the model's {list(map(list, face.stack))}")
    width = modules.embed_dim(model)
    if face.width is not None and width != face.width:
        differences.append(f"encoder width {width} vs the model's {face.width}")
    layers = modules.num_layers(model)
    attentions = sum(node.op_type == "Softmax" for node in loaded.proto.graph.node)  # one per transformer layer
    if attentions and attentions != (layer or layers):
        differences.append(f"{layers} transformer layers vs the model's {attentions}")
    if differences:
        raise UnusableInputError(
            f"{checkpoint}: does not match {loaded.source or 'the model'} ({'; '.join(differences)}); "
            "give the checkpoint it was exported from"
        )


def _torch_device(device: str) -> str:
    """The PyTorch device for an fp16 reference: CUDA only when not refused and present."""
    if device == "cpu":
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
