"""Inference of the repaired model on ONNX Runtime against fairseq in PyTorch eager."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from timing import HUBERT_FIX, interleaved, timed

from hubert_fix.analysis.convstack import SAMPLE_RATE
from hubert_fix.errors import HubertFixError
from hubert_fix.exporter import loading, modules  # first: it imports fairseq without fairseq's DEBUG logging
from hubert_fix.onnxio.session import CPU, create_session
from hubert_fix.validation.matrix import Case

INPUTS = {
    "batch 1, 2 s": Case("2 s", (2 * SAMPLE_RATE,)),
    "batch 1, 10 s": Case("10 s", (10 * SAMPLE_RATE,)),
    "batch 4 padded, 5 s": Case("4 padded", tuple(s * SAMPLE_RATE for s in (5, 4, 3, 2))),
}


def measure_inference(checkpoint: Path, repaired: Path, work: Path, runs: int, threads: int) -> dict[str, object]:
    """ORT (repaired model) against fairseq eager, same inputs, same thread count.

    Where CUDAExecutionProvider really runs, also ORT CUDA fp32 and fp16 (an fp16 export
    of the same checkpoint, repaired and validated by ``hubert-fix export --fp16``)
    against PyTorch on the GPU in the same precisions.
    """
    torch.set_num_threads(threads)
    model = loading.load_checkpoint(checkpoint)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    sessions = {"ORT CPU fp32": (ort.InferenceSession(str(repaired), options, providers=[CPU]), np.float32)}
    eager = {"PyTorch CPU fp32": (model, "cpu", torch.float32)}
    try:
        sessions["ORT CUDA fp32"] = (create_session(str(repaired), str(repaired), device="cuda"), np.float32)
    except HubertFixError:  # no usable GPU here: CPU figures only
        pass
    if "ORT CUDA fp32" in sessions and torch.cuda.is_available():
        half = work / "half.onnx"
        timed(HUBERT_FIX, "export", checkpoint, "-o", half, "--fp16", "--device", "cuda", "-q")
        sessions["ORT CUDA fp16"] = (create_session(str(half), str(half), device="cuda"), np.float16)
        eager["PyTorch CUDA fp32"] = (modules.on_device(model, fp16=False, device="cuda"), "cuda", torch.float32)
        eager["PyTorch CUDA fp16"] = (modules.on_device(model, fp16=True, device="cuda"), "cuda", torch.float16)
    results: dict[str, object] = {}
    for label, case in INPUTS.items():
        source, mask = case.inputs()
        runners = {}
        for name, (module, device, dtype) in eager.items():
            src = torch.from_numpy(source).to(device=device, dtype=dtype)
            pm = torch.from_numpy(mask).to(device)
            sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

            def run(module=module, src=src, pm=pm, sync=sync) -> None:
                with torch.inference_mode():
                    modules._extract(module, src, pm, None)
                sync()

            runners[name] = run
        for name, (session, dtype) in sessions.items():
            feeds = {"source": source.astype(dtype), "padding_mask": mask}
            runners[name] = lambda session=session, feeds=feeds: session.run(None, feeds)
        row: dict[str, object] = dict(interleaved(runners, runs))
        row["ORT CPU / PyTorch CPU"] = round(row["ORT CPU fp32"]["median_ms"] / row["PyTorch CPU fp32"]["median_ms"], 2)
        results[label] = row
    results["providers"] = {name: session.get_providers()[0] for name, (session, _) in sessions.items()}
    return results
