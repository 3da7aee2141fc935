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
   share of one core's FMA peak at the nominal clock; the floor under each runtime
   (``floor.py``: every product of the model on the runtime's own kernels alone); the CPU's
   model and flags; and the targets of issues 19 and 30. ORT fp16 is timed on CUDA only where
   it really runs.

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
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import onnxruntime as ort
import torch

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"  # docs/benchmarks.md shows its results.md
sys.path.insert(0, str(ROOT / "bench"))  # its modules, also when run.py is imported (tests/test_bench.py)

from files import measure_files  # noqa: E402
from inference import measure_inference  # noqa: E402
from machine import _cpu_name, _isa  # noqa: E402
from sizes import SIZES  # noqa: E402
from tables import markdown, publish  # noqa: E402
from timing import HUBERT_FIX, timed  # noqa: E402
from variants import measure_variants  # noqa: E402


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
