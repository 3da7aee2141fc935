"""What a run shows: results.md's tables, and the page that publishes the last run."""

from __future__ import annotations

from pathlib import Path

from inference import INPUTS
from variants import CHUNKS

ROOT = Path(__file__).resolve().parent.parent


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
        "| variant | `optimize`: time, peak RSS of its largest process, peak of all its processes (PSS) | file |",
        "| --- | --- | --- |",
    ]
    for label, cost in variants["optimize"].items():
        missed = variants["missed"].get(label)
        what = (
            f"{variants['file_mb'][label]} MB"
            if not missed
            else f"not written: {len(missed)} failure(s), first: {missed[0]}"
        )
        lines.append(f"| {label} | {cost['seconds']} s, {cost['peak_rss_mb']} MB, {cost['tree_pss_mb']} MB | {what} |")
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
    return [*lines, "", *floor_table(variants), "", *targets(variants)]


def floor_table(variants: dict[str, object]) -> list[str]:
    """Each runtime's floor at 10 s, 1 thread (bench/floor.py) against PyTorch eager in this run."""
    eager = variants["latency"]["1 thread"]["10 s"]["PyTorch eager fp32"]["median_ms"]
    floor = variants["floor"]
    lines = [
        "The floor under each runtime, 10 s, 1 thread (`bench/floor.py`, in a process of its own): every "
        "product of the model (convs, projections, FFNs, attention's two products) timed alone on the "
        "runtime's own kernels, its operands in place, in every precision the runtime offers and, for a "
        "conv, as a convolution and as its im2col product, the fastest taken; nothing else costs time (no "
        "norm, activation, softmax or quantization of activations). A variant that computes these products "
        "with these kernels can come near its runtime's floor, not far under it (in a graph a runtime can "
        "also keep its own layouts between ops and fuse what follows a product, which a lone product cannot):",
        "",
        "| runtime (kernels) | floor | x PyTorch eager |",
        "| --- | --- | --- |",
    ]
    for runtime, ms in floor["floor_ms"].items():
        lines.append(f"| {runtime} ({', '.join(floor['kernels'][runtime])}) | {ms} ms | {ms / eager:.2f}x |")
    return lines


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
    eager = ten["PyTorch eager fp32"]["median_ms"]
    floor = {runtime: f"floor {ms / eager:.2f}x" for runtime, ms in variants["floor"]["floor_ms"].items()}
    runtime_of = "OpenVINO" if best and best.startswith("OpenVINO") else "ONNX Runtime int8"
    memory = {  # the larger of the two: a forked child's work beside its parent counts whole
        label: max(cost["peak_rss_mb"], cost["tree_pss_mb"]) / variants["file_mb"]["ORT fp32 repaired"]
        for label, cost in variants["optimize"].items()
    }
    rows = [
        (
            "the best variant `optimize` writes (min frame cosine >= 0.999): <= 0.15x PyTorch eager, faster than "
            "OpenVINO's own default",
            f"{best}: {ratio[best]}x (OpenVINO default {default}x; {floor[runtime_of]})" if best else "none written",
            best is not None and ratio[best] <= 0.15 and ratio[best] < default,
        ),
        (
            "ORT int8 <= 0.25x",
            f"{ratio.get('ORT int8')}x ({floor['ONNX Runtime int8']})",
            ratio.get("ORT int8", 9) <= 0.25,
        ),
        (
            "`optimize` fp32 <= 0.45x",
            f"{ratio['ORT fp32 optimized']}x ({floor['ONNX Runtime fp32']})",
            ratio["ORT fp32 optimized"] <= 0.45,
        ),
        (
            "`optimize` peak memory (largest process or all together) <= 3.2x the model file, every precision",
            ", ".join(f"{label} {v:.1f}x" for label, v in memory.items()),
            max(memory.values()) <= 3.2,
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
