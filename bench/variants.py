"""The deployment variants at base size: what optimize costs and writes, their latency and accuracy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from floor import measure_floors_alone, products
from machine import _peak_gflops
from sizes import SIZES, speech_like
from timing import HUBERT_FIX, interleaved, timed

from hubert_fix.analysis.convstack import SAMPLE_RATE
from hubert_fix.errors import HubertFixError
from hubert_fix.exporter import loading, modules  # first: it imports fairseq without fairseq's DEBUG logging
from hubert_fix.onnxio.session import CPU, create_session

CHUNKS = {"10 s": 10 * SAMPLE_RATE, "1 s": SAMPLE_RATE, "0.5 s": SAMPLE_RATE // 2}
#: What ``optimize`` writes for each variant (OUT name, flags; OpenVINO int8 adds the calibration audio).
BUILDS = {
    "ORT fp32 optimized": ("opt_fp32.onnx", []),
    "ORT int8": ("opt_int8.onnx", ["--int8"]),
    "ORT fp16": ("opt_fp16.onnx", ["--fp16"]),
    "OpenVINO optimized": ("opt_ov.xml", ["--runtime", "openvino"]),
    "OpenVINO int8": ("opt_ov_int8.xml", ["--runtime", "openvino", "--int8"]),
}


def _size_mb(path: Path) -> float:
    """The model and its weights file (OpenVINO IR: the .bin beside the .xml)."""
    files = [path, path.with_suffix(".bin")] if path.suffix == ".xml" else [path]
    return round(sum(f.stat().st_size for f in files) / 1e6, 1)


def _frame_cosines(output: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    a = output.reshape(-1, output.shape[-1]).astype(np.float64)
    b = reference.reshape(-1, reference.shape[-1]).astype(np.float64)
    cosines = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return round(float(cosines.mean()), 5), round(float(cosines.min()), 5)


def measure_variants(checkpoint: Path, repaired: Path, work: Path, runs: int) -> dict[str, object]:
    """optimize's cost per variant, then the latency of every variant against PyTorch eager (base, batch 1,
    10 s, 1 s and 0.5 s, 1 and 2 threads) and its frame cosines against PyTorch fp32 (10 s of speech-like audio)."""
    import openvino as ov
    import soundfile

    audio = []
    for seed in range(8):  # 32 s of speech-like calibration audio in files of 3-5 s, as long as spoken sentences
        audio.append(work / f"speech{seed}.wav")
        soundfile.write(audio[-1], speech_like(3 + 2 * seed / 7, seed=seed), SAMPLE_RATE)
    result: dict[str, object] = {"optimize": {}, "missed": {}, "file_mb": {"ORT fp32 repaired": _size_mb(repaired)}}
    written = {}
    for label, (name, flags) in BUILDS.items():
        out = work / name
        extra = [a for f in audio for a in ("--calibration-audio", f)] if label == "OpenVINO int8" else []
        report_path = work / f"{name}.report.json"
        command = (HUBERT_FIX, "optimize", repaired, "-o", out, *flags, *extra, "-q", "--json")
        result["optimize"][label] = timed(*command, stdout=report_path)
        if out.exists():
            written[label], result["file_mb"][label] = out, _size_mb(out)
        else:  # missed its tolerance: why, from its report
            report = json.loads(report_path.read_text())
            failures = [f"{c['name']}: {f}" for c in report["validation"]["cases"] for f in c["failures"]]
            result["missed"][label] = failures
    config = dict(SIZES["base"][1])
    result["floor"] = measure_floors_alone(config, CHUNKS["10 s"], runs)  # before this process holds any runtime
    model = loading.load_checkpoint(checkpoint)
    result["gflop"] = {
        chunk: round(sum(p.flops for p in products(config, samples)) / 1e9, 2) for chunk, samples in CHUNKS.items()
    }
    core = ov.Core()
    latency: dict[str, object] = {}
    accuracy: dict[str, object] = {}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        runs_of = {}  # label -> (feeds -> first output)
        for label, path in [
            ("ORT fp32 repaired", repaired),
            *[(k, v) for k, v in written.items() if k.startswith("ORT")],
        ]:
            if label == "ORT fp16":
                continue  # on CPU only validated; timed on CUDA below
            session = ort.InferenceSession(str(path), options, providers=[CPU])
            runs_of[label] = lambda feeds, session=session: session.run(None, feeds)[0]
        config_ov = {"INFERENCE_NUM_THREADS": threads}
        openvino = [("OpenVINO default (repaired ONNX)", repaired, {})]
        for label in ("OpenVINO optimized", "OpenVINO int8"):
            if label in written:
                record = json.loads(core.read_model(written[label]).get_rt_info(["hubert_fix", "optimize"]).astype(str))
                openvino.append((label, written[label], record.get("compile_config", {})))
        for label, path, extra in openvino:
            compiled = core.compile_model(str(path), "CPU", {**config_ov, **extra})
            runs_of[label] = lambda feeds, compiled=compiled: compiled(feeds)[0]

        def eager(feeds: dict[str, np.ndarray]) -> np.ndarray:
            with torch.inference_mode():
                src, pm = torch.from_numpy(feeds["source"]), torch.from_numpy(feeds["padding_mask"])
                return modules._extract(model, src, pm, None)[0].numpy()

        runs_of = {"PyTorch eager fp32": eager, **runs_of}
        cells = {}
        for chunk, samples in CHUNKS.items():
            source = speech_like(samples / SAMPLE_RATE, seed=99)[None, :]
            feeds = {"source": source, "padding_mask": np.zeros(source.shape, dtype=bool)}
            if chunk == "10 s" and threads == 1:
                reference = eager(feeds)
                accuracy = {label: _frame_cosines(run(feeds), reference) for label, run in runs_of.items()}
            cell = interleaved({label: lambda run=run, feeds=feeds: run(feeds) for label, run in runs_of.items()}, runs)
            for stats in cell.values():
                stats["gflop_per_s"] = round(result["gflop"][chunk] / (stats["median_ms"] / 1e3), 1)
                stats["vs_pytorch"] = round(stats["median_ms"] / cell["PyTorch eager fp32"]["median_ms"], 2)
            cells[chunk] = cell
        latency[f"{threads} thread{'s' if threads > 1 else ''}"] = cells
    result["accuracy_10s"] = accuracy
    try:
        fp16 = work / BUILDS["ORT fp16"][0]
        session = create_session(str(fp16), str(fp16), device="cuda")
        source = speech_like(10, seed=99)[None, :]
        feeds = {"source": source, "padding_mask": np.zeros(source.shape, dtype=bool)}
        latency["CUDA"] = interleaved({"ORT fp16": lambda: session.run(None, feeds)}, runs)
    except HubertFixError:
        latency["CUDA"] = None  # no GPU really ran: the fp16 model was validated on CPU only
    result["latency"] = latency
    result["peak_gflops_1_core"] = _peak_gflops()
    return result
