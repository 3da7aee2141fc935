"""Every ``hubert_fix.*`` key of a model's ``metadata_props``, and the only code that writes them.

Export records the facts of the torch model the graph cannot show (conv stack, width,
layer, precision, a recogniser's vocabulary); repair and optimize record what they did.
Readers use :func:`read`.
"""

from __future__ import annotations

import json

import onnx

from hubert_fix._version import __version__

#: (kernel, stride) per conv layer of the feature extractor, input first, as JSON
CONV_STACK = "hubert_fix.conv_stack"
#: the encoder width C
EMBED_DIM = "hubert_fix.embed_dim"
#: channels of the first output (C, final_proj's width, or the vocabulary size)
OUTPUT_DIM = "hubert_fix.output_dim"
#: "1" when the features end in the model's final_proj
FINAL_PROJ = "hubert_fix.final_proj"
#: the 1-based transformer layer the features come from (empty: the last)
OUTPUT_LAYER = "hubert_fix.output_layer"
#: fp32, fp16 or int8: what the model computes in
PRECISION = "hubert_fix.precision"
#: the fairseq model class exported
MODEL = "hubert_fix.model"
#: the exporter and torch version
EXPORTER = "hubert_fix.exporter"
#: the audio sample rate the checkpoint was trained at
SAMPLE_RATE = "hubert_fix.sample_rate"
#: "ctc" for a fine-tuned recogniser (logits and a frame mask)
KIND = "hubert_fix.kind"
#: a recogniser's symbols, as JSON
VOCABULARY = "hubert_fix.vocabulary"
#: the CTC blank's index in the vocabulary
BLANK_INDEX = "hubert_fix.blank_index"
#: the padding symbol's index
PAD_INDEX = "hubert_fix.pad_index"
#: what a recogniser's outputs are, in words
LOGITS = "hubert_fix.logits"
#: what repair did (JSON: version, passes, edits; earlier runs in history)
REPAIR = "hubert_fix.repair"
#: what optimize did (JSON; earlier runs in history)
OPTIMIZE = "hubert_fix.optimize"


def stamp() -> dict[str, object]:
    """What every record of ours begins with: the tool and its version."""
    return {"tool": "hubert-fix", "version": __version__}


def read(model: onnx.ModelProto) -> dict[str, str]:
    """Every metadata_props entry (ours and others'), key to value."""
    return {p.key: p.value for p in model.metadata_props}


def set_metadata(model: onnx.ModelProto, entries: dict[str, str]) -> None:
    """Set ``metadata_props`` keys, replacing older values and keeping every other key."""
    kept = [p for p in model.metadata_props if p.key not in entries]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in entries.items():
        model.metadata_props.add(key=key, value=value)


def set_record(model: onnx.ModelProto, key: str, record: dict[str, object]) -> None:
    """Store ``record`` as JSON under ``key``; a record already there moves into its
    ``history`` (oldest first), so running a step again keeps what the first run did."""
    earlier = read(model).get(key)
    if earlier is not None:
        try:
            previous = json.loads(earlier)
        except ValueError:
            previous = {"unreadable": earlier}
        if not isinstance(previous, dict):
            previous = {"unreadable": earlier}
        history = previous.pop("history", [])
        record = {**record, "history": [*(history if isinstance(history, list) else [history]), previous]}
    set_metadata(model, {key: json.dumps(record, sort_keys=True)})
