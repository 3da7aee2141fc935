"""The models a run builds: HuBERT base and large from fairseq's configs, random weights (no download)."""

from __future__ import annotations

import sys
from pathlib import Path

from hubert_fix.exporter import loading  # noqa: F401 - first: it imports fairseq without fairseq's DEBUG logging

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "fixtures"))

import make_fixtures  # noqa: E402
from catalog import CHECKPOINTS  # noqa: E402
from speech import speech_like  # noqa: E402

__all__ = ["SIZES", "make_fixtures", "speech_like"]

SIZES = {
    # hubert_base_ls960: 12 x 768, conv 512
    "base": (CHECKPOINTS["hubert_base_tiny"], make_fixtures.BASE_MODEL_CONFIG),
    # hubert_large_ll60k: 24 x 1024, layer-norm extractor, pre-LN
    "large": (
        CHECKPOINTS["hubert_large_tiny"],
        {
            **CHECKPOINTS["hubert_large_tiny"].model,
            "conv_feature_layers": "[(512,10,5)] + [(512,3,2)]*4 + [(512,2,2)]*2",
            "encoder_layers": 24,
            "encoder_embed_dim": 1024,
            "encoder_ffn_embed_dim": 4096,
            "encoder_attention_heads": 16,
            "conv_pos": 128,
            "conv_pos_groups": 16,
            "final_dim": 768,
        },
    ),
}
