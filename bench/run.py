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
4. deployment variants at base size, batch 1, 10 s (``--variants``, on by default):
   ``hubert-fix optimize`` (wall time, peak RSS, file size) for fp32, ``--int8`` and
   ``--fp16``, then latency at 1 and 2 threads of the repaired fp32 model, the optimized
   fp32, int8 (CPU) and fp16 (CUDA, only where CUDAExecutionProvider really runs)
   against fairseq in PyTorch eager, measured in turn within each round so that load
   changes on the machine hit all of them alike; with the model's FLOP count and the
   GFLOP/s each reaches, and the CPU's model and instruction-set features.

Writes ``results.json`` and ``results.md`` into ``--out``, with the date, the command and the
CPU; ``--readme`` also puts ``results.md`` into README.md between its markers, and
``tests/test_readme.py`` fails when the two differ.
Each command is timed by a small helper process with ``os.wait4`` (that child's rusage alone).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "fixtures"))

import make_fixtures  # noqa: E402
from catalog import CHECKPOINTS  # noqa: E402

from hubert_fix.errors import HubertFixError  # noqa: E402
from hubert_fix.exporter import loading, modules  # noqa: E402
from hubert_fix.onnxio.session import CPU, create_session  # noqa: E402
from hubert_fix.validation.matrix import SAMPLE_RATE, Case  # noqa: E402

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
child = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)
_, status, usage = os.wait4(child.pid, 0)
print(json.dumps({"seconds": round(time.perf_counter() - start, 3), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
                  "exit": os.waitstatus_to_exitcode(status)}))
"""


def timed(*command: object) -> dict[str, float]:
    """Wall seconds and peak RSS (MB) of one command; fails loudly if it fails."""
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, *map(str, command)], capture_output=True, text=True, check=True
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


def measure_variants(checkpoint: Path, repaired: Path, work: Path, runs: int) -> dict[str, object]:
    """optimize's cost per precision, then latency of every variant vs PyTorch eager (base, 10 s, batch 1)."""
    optimized = {"fp32": work / "opt_fp32.onnx", "int8": work / "opt_int8.onnx", "fp16": work / "opt_fp16.onnx"}
    result: dict[str, object] = {"optimize": {}, "file_mb": {"fp32 repaired": round(repaired.stat().st_size / 1e6, 1)}}
    for precision, out in optimized.items():
        flag = [] if precision == "fp32" else [f"--{precision}"]
        result["optimize"][precision] = timed(HUBERT_FIX, "optimize", repaired, "-o", out, *flag, "-q", "--json")
        if not out.exists():
            raise SystemExit(f"bench: optimize --{precision} wrote nothing (its tolerance was missed); see its report")
        result["file_mb"][precision] = round(out.stat().st_size / 1e6, 1)
    model = loading.load_checkpoint(checkpoint)
    case = INPUTS["batch 1, 10 s"]
    source, mask = case.inputs()
    feeds = {"source": source, "padding_mask": mask}
    flops = _flops(dict(SIZES["base"][1]), case.samples)
    result["gflop"] = round(flops / 1e9, 1)
    latency: dict[str, object] = {}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        runners = {}
        for label, path in (("ORT fp32 repaired", repaired), ("ORT fp32 optimized", optimized["fp32"]),
                            ("ORT int8", optimized["int8"])):  # fmt: skip
            session = ort.InferenceSession(str(path), options, providers=[CPU])
            runners[label] = lambda session=session: session.run(None, feeds)
        src, pm = torch.from_numpy(source), torch.from_numpy(mask)

        def eager(src: torch.Tensor = src, pm: torch.Tensor = pm) -> None:
            with torch.inference_mode():
                modules._extract(model, src, pm, None)

        runners["PyTorch eager fp32"] = eager
        cell = interleaved(runners, runs)
        for stats in cell.values():
            stats["gflop_per_s"] = round(flops / 1e9 / (stats["median_ms"] / 1e3), 1)
            stats["vs_pytorch"] = round(stats["median_ms"] / cell["PyTorch eager fp32"]["median_ms"], 2)
        latency[f"{threads} thread{'s' if threads > 1 else ''}"] = cell
    try:
        session = create_session(str(optimized["fp16"]), str(optimized["fp16"]), device="cuda")
        latency["CUDA"] = interleaved({"ORT fp16": lambda: session.run(None, feeds)}, runs)
    except HubertFixError:
        latency["CUDA"] = None  # no GPU really ran: the fp16 model was validated on CPU only
    result["latency"] = latency
    return result


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
        lines += [
            "",
            f"Deployment variants, base, batch 1, 10 s ({variants['gflop']} GFLOP), median of {report['runs']} rounds "
            f"(each round runs every variant once) after 2 warm-ups, ms (min-max), GFLOP/s, ratio to PyTorch eager:",
            "",
            "| variant | file | `optimize`: time, peak RSS | 1 thread | 2 threads |",
            "| --- | --- | --- | --- | --- |",
        ]
        files = {"ORT fp32 repaired": "fp32 repaired", "ORT fp32 optimized": "fp32", "ORT int8": "int8"}
        for label in ("PyTorch eager fp32", "ORT fp32 repaired", "ORT fp32 optimized", "ORT int8"):
            key = files.get(label)
            size = f"{variants['file_mb'][key]} MB" if key else "-"
            opt = variants["optimize"].get(key) if key in ("fp32", "int8") else None
            cost = f"{opt['seconds']} s, {opt['peak_rss_mb']} MB" if opt else "-"
            cells = []
            for threads in ("1 thread", "2 threads"):
                c = variants["latency"][threads][label]
                cells.append(
                    f"{c['median_ms']} ({c['min_ms']}-{c['max_ms']}), {c['gflop_per_s']} GFLOP/s, {c['vs_pytorch']}x"
                )
            lines.append(f"| {label} | {size} | {cost} | {cells[0]} | {cells[1]} |")
        half = variants["optimize"]["fp16"]
        cuda = variants["latency"]["CUDA"]
        lines.append(
            f"| ORT fp16 | {variants['file_mb']['fp16']} MB | {half['seconds']} s, {half['peak_rss_mb']} MB | "
            + (f"CUDA: {cuda['ORT fp16']['median_ms']} ms |" if cuda else "no GPU ran here: validated on CPU only |")
            + " |"
        )
        lines += ["", *targets(variants)]
    return "\n".join(lines) + "\n"


def targets(variants: dict[str, object]) -> list[str]:
    """The deployment targets against this run's figures (base, batch 1, 10 s)."""
    one, two = variants["latency"]["1 thread"], variants["latency"]["2 threads"]
    files, cost = variants["file_mb"], variants["optimize"]
    fp32 = (one["ORT fp32 optimized"]["vs_pytorch"], two["ORT fp32 optimized"]["vs_pytorch"])
    int8 = (one["ORT int8"]["vs_pytorch"], two["ORT int8"]["vs_pytorch"])
    size = files["int8"] / files["fp32 repaired"]
    rss = {p: cost[p]["peak_rss_mb"] / files["fp32 repaired"] for p in ("fp32", "int8", "fp16")}
    rows = [
        ("optimized fp32 faster than PyTorch eager at 1 and 2 threads", f"{fp32[0]}x, {fp32[1]}x", max(fp32) < 1),
        ("int8 <= 0.45x PyTorch eager fp32 latency", f"{int8[0]}x, {int8[1]}x", max(int8) <= 0.45),
        ("int8 file <= 0.3x fp32", f"{files['int8']} / {files['fp32 repaired']} MB = {size:.3f}x", size <= 0.3),
        (
            "`optimize` peak RSS < 2x the model file",
            ", ".join(f"{p} {v:.1f}x" for p, v in rss.items()),
            max(rss.values()) < 2,
        ),
    ]
    return ["| target (1 thread, 2 threads) | this run | met |", "| --- | --- | --- |"] + [
        f"| {target} | {figure} | {'yes' if met else 'no'} |" for target, figure, met in rows
    ]


README_START = "<!-- bench/results/results.md: written by `python bench/run.py --readme`; do not edit by hand -->"
README_END = "<!-- end of bench/results/results.md -->"


def update_readme(table: str) -> None:
    """Put the run's table into README.md between its markers (tests/ checks that they agree)."""
    readme = ROOT / "README.md"
    text = readme.read_text()
    head, rest = text.split(README_START + "\n", 1)
    _, tail = rest.split(README_END, 1)
    readme.write_text(f"{head}{README_START}\n{table}{README_END}{tail}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="base,large", help="comma-separated: base, large")
    parser.add_argument("--runs", type=int, default=10, help="timed inference runs per cell (>= 10 for the README)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each file-level command (the best is kept)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument(
        "--no-variants", dest="variants", action="store_false", help="leave out the deployment variants"
    )
    parser.add_argument(
        "--readme", action="store_true", help="also put the table into README.md (with the default --out)"
    )
    args = parser.parse_args()
    sizes = [s for s in args.sizes.split(",") if s]
    unknown = set(sizes) - set(SIZES)
    if unknown:
        parser.error(f"unknown size(s): {', '.join(sorted(unknown))}")
    if args.readme and args.out != parser.get_default("out"):
        parser.error("--readme shows bench/results/results.md: leave --out at its default")
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
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    table = markdown(report)
    (args.out / "results.md").write_text(table)
    if args.readme:
        update_readme(table)
    print(table)


if __name__ == "__main__":
    main()
