"""Benchmark hubert-fix at real size: repair cost against the I/O floor, ORT against PyTorch.

    .venv/bin/python bench/run.py [--sizes base,large] [--runs 10] [--out bench/results]

Builds HuBERT base (12 x 768) and large (24 x 1024) from fairseq configs with random
weights (seed 0, no download), exports each as-is with ``hubert-fix export --raw``, and
measures on this machine, in this one run:

1. ``hubert-fix check`` and ``hubert-fix repair``: wall time and peak RSS of the process,
   next to the floor for the same file (``onnx.load`` + ``onnx.save`` in a fresh process)
   and the file size; also ``repair`` of the same model saved with external data;
2. inference of the repaired model on ONNX Runtime (CPU EP; CUDA EP fp32 and fp16 when a
   GPU really runs) against fairseq in PyTorch eager, same inputs and thread count:
   batch 1 at 2 s and 10 s of audio, and a padded batch of 4 (5/4/3/2 s padded to 5 s);
   median of ``--runs`` runs after 2 warm-up runs, with min and max;
3. ``hubert-fix validate --checkpoint`` wall time at base size;
4. deployment variants at base size, batch 1 (``--variants``, on by default):
   ``hubert-fix optimize`` (wall time, peak RSS, file size, or why it wrote nothing) for
   ONNX Runtime fp32, ``--int8`` and ``--fp16`` and for OpenVINO's fastest float and
   ``--int8`` (calibrated on 16 s of ``fixtures/speech.py`` audio); then latency at 10 s,
   1 s and 0.5 s (the chunks real-time voice conversion feeds), 1 and 2 threads, of
   PyTorch eager, the repaired fp32 model on ONNX Runtime, every variant written, and
   OpenVINO's own default on the repaired ONNX (``compile_model(repaired.onnx, "CPU")``),
   measured in turn within each round so that load changes hit all alike; frame cosines
   against PyTorch fp32 on 10 s of speech-like audio; the FLOP count, GFLOP/s and the
   share of one core's FMA peak at the nominal clock; the CPU's model and flags; and the
   targets of issue 19. ORT fp16 is timed on CUDA only where it really runs.

Writes ``results.json`` and ``results.md`` into ``--out`` (default: a new folder in the temp
folder), with the date, the command and the CPU; ``--publish`` writes them into bench/results
and puts ``results.md`` into docs/benchmarks.md between its markers (``tests/test_readme.py``
fails when the two differ; only ``--publish`` writes bench/results). SIGTERM, like Ctrl-C, removes
the work folder on the way out.
Each command is timed by a small helper process with ``os.wait4`` (that child's rusage alone).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from hubert_fix.analysis.convstack import SAMPLE_RATE
from hubert_fix.errors import HubertFixError
from hubert_fix.exporter import loading, modules  # first: it imports fairseq without fairseq's DEBUG logging
from hubert_fix.onnxio.session import CPU, create_session
from hubert_fix.validation.matrix import Case

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"  # docs/benchmarks.md shows its results.md
sys.path.insert(0, str(ROOT / "fixtures"))

import make_fixtures  # noqa: E402
from catalog import CHECKPOINTS  # noqa: E402
from speech import speech_like  # noqa: E402

HUBERT_FIX = Path(sys.executable).parent / "hubert-fix"
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
INPUTS = {
    "batch 1, 2 s": Case("2 s", (2 * SAMPLE_RATE,)),
    "batch 1, 10 s": Case("10 s", (10 * SAMPLE_RATE,)),
    "batch 4 padded, 5 s": Case("4 padded", tuple(s * SAMPLE_RATE for s in (5, 4, 3, 2))),
}


# Runs one command and reports its own wall time and peak RSS. A small process of its own,
# because Linux keeps ru_maxrss across exec: a child forked from this (large) process
# would report this process's size.
_MEASURE = """
import json, os, subprocess, sys, time
start = time.perf_counter()
out = os.environ.get("BENCH_STDOUT")
child = subprocess.Popen(sys.argv[1:], stdout=open(out, "w") if out else subprocess.DEVNULL)
_, status, usage = os.wait4(child.pid, 0)
print(json.dumps({"seconds": round(time.perf_counter() - start, 3), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
                  "exit": os.waitstatus_to_exitcode(status)}))
"""


def timed(*command: object, stdout: Path | None = None) -> dict[str, float]:
    """Wall seconds and peak RSS (MB) of one command (its stdout into ``stdout``, if given); fails loudly if it fails."""
    env = {**os.environ, "BENCH_STDOUT": str(stdout)} if stdout is not None else None
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, *map(str, command)], capture_output=True, text=True, check=True, env=env
    )
    result = json.loads(done.stdout)
    if result.pop("exit") not in (0, 1):  # check exits 1 when it finds something: that is the point
        raise SystemExit(f"bench: {' '.join(map(str, command))} failed: {done.stderr.strip()}")
    return result


def best_of(runs: int, *command: object) -> dict[str, float]:
    """The fastest of ``runs`` runs (the least disturbed), with its own peak RSS."""
    results = [timed(*command) for _ in range(runs)]
    return min(results, key=lambda r: r["seconds"])


FLOOR = "import onnx, sys; onnx.save(onnx.load(sys.argv[1]), sys.argv[2])"
TO_EXTERNAL = (
    "import onnx, sys; onnx.save(onnx.load(sys.argv[1]), sys.argv[2], save_as_external_data=True, "
    "all_tensors_to_one_file=True, location='weights.bin', size_threshold=1024)"
)


def measure_files(name: str, work: Path, repeats: int) -> tuple[dict[str, object], Path, Path]:
    """Build, export, check, repair, floor: the file-level figures for one size."""
    spec, config = SIZES[name]
    checkpoint, raw, repaired = work / f"{name}.pt", work / f"{name}.raw.onnx", work / f"{name}.onnx"
    make_fixtures.build_checkpoint(spec, checkpoint, config)
    exported = timed(HUBERT_FIX, "export", checkpoint, "-o", raw, "--raw", "-q")
    external = work / f"{name}.external"
    external.mkdir()
    timed(sys.executable, "-c", TO_EXTERNAL, raw, external / "model.onnx")
    row = {
        "file_mb": round(raw.stat().st_size / 1e6, 1),
        "export_raw": exported,
        "check": best_of(repeats, HUBERT_FIX, "check", raw, "-q"),
        "repair": best_of(repeats, HUBERT_FIX, "repair", raw, "-o", repaired, "-q"),
        "floor_load_save": best_of(repeats, sys.executable, "-c", FLOOR, raw, work / "floor.onnx"),
        "external_weights_mb": round((external / "weights.bin").stat().st_size / 1e6, 1),
        "repair_external": best_of(
            repeats, HUBERT_FIX, "repair", external / "model.onnx", "-o", work / "ext.onnx", "-q"
        ),
    }
    (work / "floor.onnx").unlink()
    return row, checkpoint, repaired


def _stats(samples: list[float]) -> dict[str, float]:
    return {
        "median_ms": round(statistics.median(samples) * 1e3, 1),
        "min_ms": round(min(samples) * 1e3, 1),
        "max_ms": round(max(samples) * 1e3, 1),
    }


def interleaved(runners: dict[str, object], runs: int) -> dict[str, dict[str, float]]:
    """Median, min and max ms of each runner: 2 warm-ups each, then ``runs`` rounds that run each once.

    Every latency figure is measured this way, so that load changes on a shared machine
    hit all the runners compared in one table alike (timing one runner's runs after the
    other's once put ORT at 1.14x PyTorch in one table and 0.93x in the next).
    """
    for run in runners.values():
        run(), run()
    samples: dict[str, list[float]] = {label: [] for label in runners}
    for _ in range(runs):
        for label, run in runners.items():
            start = time.perf_counter()
            run()
            samples[label].append(time.perf_counter() - start)
    return {label: _stats(values) for label, values in samples.items()}


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


def _flops(config: dict[str, object], samples: int) -> int:
    """FLOPs (2 per multiply-add) of HuBERT's convs, projections and attention for one utterance.

    From the fairseq config: the conv feature extractor, post_extract_proj, the
    positional conv, and per layer the q/k/v/out projections, the FFN and the two
    attention products. Norms, activations and softmax (under 2% here) are not counted.
    """
    layers = eval(str(config["conv_feature_layers"]))  # fairseq's own format: a Python list literal
    flops, length, channels = 0, samples, 1
    for out_channels, kernel, stride in layers:
        length = (length - kernel) // stride + 1
        flops += 2 * out_channels * channels * kernel * length
        channels = out_channels
    width, ffn = int(config["encoder_embed_dim"]), int(config["encoder_ffn_embed_dim"])
    flops += 2 * length * channels * width  # post_extract_proj
    flops += 2 * length * width * (width // int(config["conv_pos_groups"])) * int(config["conv_pos"])
    per_layer = 2 * length * (4 * width * width + 2 * width * ffn) + 2 * 2 * length * length * width
    return flops + int(config["encoder_layers"]) * per_layer


def _isa() -> list[str]:
    """The CPU's vector and matrix features that ONNX Runtime's and PyTorch's kernels choose by."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = line.split(":", 1)[1].split()
                wanted = ("avx2", "fma", "f16c", "avx512", "vnni", "amx", "bf16")
                return sorted(f for f in flags if any(w in f for w in wanted))
    except OSError:
        pass
    return []


#: Latency of the deployment variants: the 10 s input and the short chunks real-time voice conversion feeds.
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
    for seed in range(8):  # 16 s of speech-like calibration audio, in 2 s files
        audio.append(work / f"speech{seed}.wav")
        soundfile.write(audio[-1], speech_like(2, seed=seed), SAMPLE_RATE)
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
    model = loading.load_checkpoint(checkpoint)
    config = dict(SIZES["base"][1])
    result["gflop"] = {chunk: round(_flops(config, samples) / 1e9, 2) for chunk, samples in CHUNKS.items()}
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


def _peak_gflops() -> float | None:
    """One core's fp32 FMA peak from the CPU's flags and clock: 2 FMA units x lanes x 2 FLOP x GHz
    (AVX-512: 16 lanes, AVX2: 8); None where the clock cannot be read."""
    try:
        mhz = max(
            float(line.split(":")[1])
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("cpu MHz")
        )
    except (OSError, ValueError):
        return None
    lanes = 16 if "avx512f" in _isa() else 8 if "avx2" in _isa() else 4
    return round(2 * lanes * 2 * mhz / 1e3, 1)


def _cpu_name() -> str:
    """The CPU model (Linux /proc/cpuinfo), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def markdown(report: dict[str, object]) -> str:
    machine = report["machine"]
    lines = [
        f"Machine: {machine['cpu']} ({', '.join(machine.get('isa', [])) or 'no flags read'}), {machine['cores']} cores, {machine['threads']} threads used, "
        f"GPU: {machine['gpu'] or 'none'}; onnxruntime {machine['onnxruntime']}, torch {machine['torch']}.",
        f"Run {report['date']}: `{report['command']}` ({report['seconds']:.0f} s).",
        "",
        "| size | file | check | repair | floor: onnx.load + onnx.save | repair / floor | repair RSS / file |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for size, row in report["sizes"].items():
        files = row["files"]
        rep, floor = files["repair"], files["floor_load_save"]
        lines.append(
            f"| {size} | {files['file_mb']} MB | {files['check']['seconds']} s, {files['check']['peak_rss_mb']} MB | "
            f"{rep['seconds']} s, {rep['peak_rss_mb']} MB | {floor['seconds']} s, {floor['peak_rss_mb']} MB | "
            f"{rep['seconds'] / floor['seconds']:.2f}x | {rep['peak_rss_mb'] / files['file_mb']:.2f}x |"
        )
    lines += [
        "",
        "| size | external-data model: weights | repair | repair RSS / weights |",
        "| --- | --- | --- | --- |",
    ]
    for size, row in report["sizes"].items():
        files = row["files"]
        ext = files["repair_external"]
        lines.append(
            f"| {size} | {files['external_weights_mb']} MB | {ext['seconds']} s, {ext['peak_rss_mb']} MB | "
            f"{ext['peak_rss_mb'] / files['external_weights_mb']:.2f}x |"
        )
    lines += [
        "",
        f"Inference, median of {report['runs']} rounds (each round runs every column once) after 2 warm-ups "
        f"(min-max), ms, {machine['threads']} threads:",
        "",
        "| size | input | PyTorch eager CPU | ORT CPU (repaired) | ORT / PyTorch |",
        "| --- | --- | --- | --- | --- |",
    ]
    for size, row in report["sizes"].items():
        for label in INPUTS:
            cell = row["inference"][label]
            torch_ms, ort_ms = cell["PyTorch CPU fp32"], cell["ORT CPU fp32"]
            lines.append(
                f"| {size} | {label} | {torch_ms['median_ms']} ({torch_ms['min_ms']}-{torch_ms['max_ms']}) | "
                f"{ort_ms['median_ms']} ({ort_ms['min_ms']}-{ort_ms['max_ms']}) | {cell['ORT CPU / PyTorch CPU']} |"
            )
    gpu_rows = [
        (size, label, cell)
        for size, row in report["sizes"].items()
        for label, cell in row["inference"].items()
        if isinstance(cell, dict) and "ORT CUDA fp32" in cell
    ]
    if gpu_rows:
        columns = ["PyTorch CUDA fp32", "ORT CUDA fp32", "PyTorch CUDA fp16", "ORT CUDA fp16"]
        lines += ["", f"| size | input | {' | '.join(columns)} |", "| --- | --- |" + " --- |" * len(columns)]
        lines += [
            f"| {s} | {label} | " + " | ".join(str(c[col]["median_ms"]) for col in columns) + " |"
            for s, label, c in gpu_rows
        ]
    else:
        lines += ["", "No GPU ran here: no CUDA figures (the CUDA rows appear when CUDAExecutionProvider really runs)."]
    if "validate_base" in report:
        lines += [
            "",
            f"`hubert-fix validate base.onnx --checkpoint base.pt --device cpu`: {report['validate_base']['seconds']} s, "
            f"{report['validate_base']['peak_rss_mb']} MB peak RSS.",
        ]
    variants = report.get("variants")
    if variants:
        lines += ["", *variant_tables(variants, report["runs"])]
    return "\n".join(lines) + "\n"


def variant_tables(variants: dict[str, object], runs: int) -> list[str]:
    """optimize's cost, then latency and accuracy of every deployment variant, then the targets."""
    lines = [
        "Deployment variants, base, batch 1: what `optimize` costs and writes (a variant that misses its "
        "tolerance is not written, and not timed):",
        "",
        "| variant | `optimize`: time, peak RSS | file |",
        "| --- | --- | --- |",
    ]
    for label, cost in variants["optimize"].items():
        missed = variants["missed"].get(label)
        what = (
            f"{variants['file_mb'][label]} MB"
            if not missed
            else f"not written: {len(missed)} failure(s), first: {missed[0]}"
        )
        lines.append(f"| {label} | {cost['seconds']} s, {cost['peak_rss_mb']} MB | {what} |")
    one = variants["latency"]["1 thread"]
    peak = variants["peak_gflops_1_core"]
    gflop = variants["gflop"]
    lines += [
        "",
        f"Latency, median of {runs} rounds (each round runs every variant once) after 2 warm-ups, ms, ratio to "
        f"PyTorch eager; 10 s is {gflop['10 s']} GFLOP, and one core's fp32 FMA peak at the nominal clock is "
        f"{peak} GFLOP/s. Frame cosine: 10 s of speech-like audio against PyTorch fp32, mean / min:",
        "",
        "| variant | 10 s, 1 thread | 10 s, 2 threads | 1 s, 1 thread | 1 s, 2 threads | 0.5 s, 1 thread | "
        "0.5 s, 2 threads | frame cosine |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for label in one["10 s"]:
        cells = []
        for chunk in CHUNKS:
            for threads in ("1 thread", "2 threads"):
                c = variants["latency"][threads][chunk][label]
                cell = f"{c['median_ms']}, {c['vs_pytorch']}x"
                if chunk == "10 s":
                    share = f", {c['gflop_per_s'] / peak:.0%} of peak" if peak and threads == "1 thread" else ""
                    cell += f" ({c['gflop_per_s']} GFLOP/s{share})"
                cells.append(cell)
        mean, low = variants["accuracy_10s"][label]
        lines.append(f"| {label} | {' | '.join(cells)} | {mean} / {low} |")
    cuda = variants["latency"]["CUDA"]
    lines.append("")
    lines.append(
        f"ORT fp16 on CUDA, 10 s: {cuda['ORT fp16']['median_ms']} ms."
        if cuda
        else "No GPU ran here: ORT fp16 was validated on CPU only and is not timed."
    )
    return [*lines, "", *targets(variants)]


def targets(variants: dict[str, object]) -> list[str]:
    """The deployment targets against this run's figures (base, batch 1, 10 s, 1 thread)."""
    ten = variants["latency"]["1 thread"]["10 s"]
    ratio = {label: cell["vs_pytorch"] for label, cell in ten.items()}
    accurate = [
        label for label in ratio if label in variants["file_mb"] and label != "ORT fp32 repaired"
        and variants["accuracy_10s"][label][1] >= 0.999
    ]  # fmt: skip
    best = min(accurate, key=ratio.get) if accurate else None
    default = ratio["OpenVINO default (repaired ONNX)"]
    rss = {
        label: cost["peak_rss_mb"] / variants["file_mb"]["ORT fp32 repaired"]
        for label, cost in variants["optimize"].items()
    }
    rows = [
        (
            "the best variant `optimize` writes (min frame cosine >= 0.999): <= 0.15x PyTorch eager, faster than "
            "OpenVINO's own default",
            f"{best}: {ratio[best]}x (OpenVINO default {default}x)" if best else "none written",
            best is not None and ratio[best] <= 0.15 and ratio[best] < default,
        ),
        ("ORT int8 <= 0.25x", f"{ratio.get('ORT int8')}x", ratio.get("ORT int8", 9) <= 0.25),
        ("`optimize` fp32 <= 0.45x", f"{ratio['ORT fp32 optimized']}x", ratio["ORT fp32 optimized"] <= 0.45),
        (
            "`optimize` peak RSS <= 2x the model file",
            ", ".join(f"{label} {v:.1f}x" for label, v in rss.items()),
            max(rss.values()) <= 2,
        ),
    ]
    return ["| target (base, 10 s, 1 thread) | this run | met |", "| --- | --- | --- |"] + [
        f"| {target} | {figure} | {'yes' if met else 'no'} |" for target, figure, met in rows
    ]


DOCS_START = "<!-- bench/results/results.md: written by `python bench/run.py --publish`; do not edit by hand -->"
DOCS_END = "<!-- end of bench/results/results.md -->"
#: The page that shows the last published run.
PAGE = ROOT / "docs" / "benchmarks.md"


def publish(table: str) -> None:
    """Put the run's table into docs/benchmarks.md between its markers (tests/ checks that they agree)."""
    text = PAGE.read_text()
    head, rest = text.split(DOCS_START + "\n", 1)
    _, tail = rest.split(DOCS_END, 1)
    PAGE.write_text(f"{head}{DOCS_START}\n{table}{DOCS_END}{tail}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--sizes", default="base,large", help="comma-separated: base, large")
    parser.add_argument(
        "--runs", type=int, default=10, help="timed inference runs per cell (>= 10 for docs/benchmarks.md)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="runs of each file-level command (the best is kept)")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help="where results.json and results.md go (default: a new folder in the temp folder; bench/results, "
        "which docs/benchmarks.md shows, only with --publish)",
    )
    parser.add_argument(
        "--no-variants", dest="variants", action="store_false", help="leave out the deployment variants"
    )
    parser.add_argument(
        "--publish",
        action="store_true",
        help="write bench/results and put its table into docs/benchmarks.md, which show one run",
    )
    return parser


def output_folder(out: Path | None, *, publish: bool) -> Path | None:
    """Where a run's results go (None: a new folder in the temp folder, made when they are
    written). bench/results is what docs/benchmarks.md shows (tests/test_readme.py holds them
    equal), so only ``--publish``, which writes both, writes there."""
    if publish:
        if out is not None and out.resolve() != RESULTS:
            raise ValueError("--publish writes bench/results, which docs/benchmarks.md shows: leave out --out")
        return RESULTS
    if out is not None and out.resolve() == RESULTS:
        raise ValueError(
            "--out bench/results is what docs/benchmarks.md shows: write it with --publish, or choose another --out"
        )
    return out


def _terminate(signum: int, frame: object) -> None:
    """SIGTERM unwinds like Ctrl-C: the work folder (GBs at base size) is removed on the way out."""
    raise SystemExit(128 + signum)


def main() -> None:
    parser = build_parser()
    args = parser.parse_args()
    sizes = [s for s in args.sizes.split(",") if s]
    unknown = set(sizes) - set(SIZES)
    if unknown:
        parser.error(f"unknown size(s): {', '.join(sorted(unknown))}")
    try:
        out = output_folder(args.out, publish=args.publish)
    except ValueError as exc:
        parser.error(str(exc))
    signal.signal(signal.SIGTERM, _terminate)
    threads = os.cpu_count() or 1
    start = time.perf_counter()
    report: dict[str, object] = {
        "command": " ".join(["python bench/run.py", *sys.argv[1:]]),
        "runs": args.runs,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": {
            "cpu": _cpu_name(),
            "isa": _isa(),
            "cores": os.cpu_count(),
            "threads": threads,
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "onnxruntime": ort.__version__,
            "torch": torch.__version__,
        },
        "sizes": {},
    }
    with tempfile.TemporaryDirectory(prefix="hubert-fix-bench-") as tmp:
        work = Path(tmp)
        for size in sizes:
            print(f"bench: {size}: build, export, check, repair, floor", file=sys.stderr, flush=True)
            files, checkpoint, repaired = measure_files(size, work, args.repeats)
            if size == "base":
                print("bench: base: validate --checkpoint", file=sys.stderr, flush=True)
                report["validate_base"] = timed(
                    HUBERT_FIX, "validate", repaired, "--checkpoint", checkpoint, "--device", "cpu", "-q"
                )
            print(f"bench: {size}: inference", file=sys.stderr, flush=True)
            inference = measure_inference(checkpoint, repaired, work, args.runs, threads)
            report["sizes"][size] = {"files": files, "inference": inference}
            if size == "base" and args.variants:
                print("bench: base: optimize and deployment variants", file=sys.stderr, flush=True)
                report["variants"] = measure_variants(checkpoint, repaired, work, args.runs)
            for path in work.iterdir():  # keep the disk use to one size at a time
                shutil.rmtree(path) if path.is_dir() else path.unlink()
    report["seconds"] = round(time.perf_counter() - start, 1)
    out = out or Path(tempfile.mkdtemp(prefix="hubert-fix-bench-results-"))
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    table = markdown(report)
    (out / "results.md").write_text(table)
    if args.publish:
        publish(table)
    print(table)
    print(f"bench: wrote {out}/results.json and results.md", file=sys.stderr)


if __name__ == "__main__":
    main()
