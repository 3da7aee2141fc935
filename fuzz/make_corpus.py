#!/usr/bin/env python3
"""Seed corpus for fuzz_load.py from a few small fixtures (about 1.5 MB in all).

Writes into fuzz/corpus/ (or the folder given): single-file models copied as they are,
and external-data models packed with their weights (packing.pack: ``HFXS`` + size +
model.onnx + weights.bin, the stubs' location rewritten to ``weights.bin``).

    .venv/bin/python fuzz/make_corpus.py [OUTDIR]
"""

from __future__ import annotations

import sys
from pathlib import Path

import onnx
from onnx.external_data_helper import convert_model_to_external_data

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from packing import SIDE_NAME, pack  # noqa: E402

FIXTURES = HERE.parent / "fixtures"

SINGLE = [
    "hubert_base_tiny.raw.onnx",  # TorchScript opset 17: where-broadcast + frozen-slice
    "hubert_base_tiny.opset11.raw.onnx",  # opset 11 (Slice/Unsqueeze attribute forms)
    "hf_hubert.onnx",  # transformers export
    "hubert_base_tiny.issue5596.onnx",  # frozen-pad
    "hubert_base_ctc.raw.onnx",  # CTC fine-tune: ctc-mask-scatter
    "hubert_base_tiny.seed_adapter.onnx",  # a frozen batch (an adapter's export)
]


def _strip(model: onnx.ModelProto) -> None:
    """Drop doc strings and per-node metadata (the dynamo export's stack traces: 300 KB)."""
    model.doc_string = ""
    for node in model.graph.node:
        node.doc_string = ""
        del node.metadata_props[:]
    for func in model.functions:
        for node in func.node:
            node.doc_string = ""
            del node.metadata_props[:]


def packed_external(model_path: Path) -> bytes:
    """An external-data model as one fuzz input: its stubs re-pointed into one weights.bin."""
    model = onnx.load(str(model_path))  # reads the external data into memory (small fixtures)
    _strip(model)
    convert_model_to_external_data(model, all_tensors_to_one_file=True, location=SIDE_NAME, size_threshold=1024)
    side = bytearray()
    from onnx.external_data_helper import _get_all_tensors, uses_external_data

    for tensor in _get_all_tensors(model):
        if not uses_external_data(tensor):
            continue
        offset = -(-len(side) // 4096) * 4096
        side += bytes(offset - len(side)) + tensor.raw_data
        tensor.ClearField("raw_data")
        del tensor.external_data[:]
        for key, value in (("location", SIDE_NAME), ("offset", str(offset)), ("length", str(len(side) - offset))):
            tensor.external_data.add(key=key, value=value)
    return pack(model.SerializeToString(), bytes(side))


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "corpus"
    out.mkdir(parents=True, exist_ok=True)
    for name in SINGLE:
        (out / name).write_bytes((FIXTURES / name).read_bytes())
    (out / "hubert_base_tiny.dynamo.packed").write_bytes(
        packed_external(FIXTURES / "hubert_base_tiny.dynamo" / "model.onnx")
    )
    (out / "hubert_base_tiny.external.packed").write_bytes(
        packed_external(FIXTURES / "hubert_base_tiny.external" / "model.onnx")
    )
    total = 0
    for f in sorted(out.iterdir()):
        total += f.stat().st_size
        print(f"{f.stat().st_size:>8}  {f}")
    print(f"{total:>8}  total")


if __name__ == "__main__":
    main()
