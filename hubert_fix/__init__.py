"""hubert-fix: repair ONNX exports of fairseq speech encoders (HuBERT, wav2vec 2.0).

The repair path (``check``/``repair``/``validate`` without ``--checkpoint``) needs
only onnx, onnx-graphsurgeon, numpy and onnxruntime; torch and fairseq are imported
lazily by the export path alone.
"""

__version__ = "0.1.0"
