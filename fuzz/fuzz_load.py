#!/usr/bin/env python3
"""Fuzz harness: damaged ONNX files through load_model, check, repair and save_model.

What a finding is and how one input is judged: ``target.py``. The input format (a model,
or a model and its ``weights.bin``): ``packing.py``. The mutations: ``mutation.py``
(graph-aware ``graph_mutator.py``, deployment tools ``post_tools.py``, damaging
``damage.py``). This module holds the engines and the command line.

Engines: atheris (libFuzzer, coverage-guided, with the structure-aware mutator of
``mutation.py``; libFuzzer's byte mutator is used for a share of the inputs) or, with
``--engine random`` or when atheris is missing, a plain mutation loop over the corpus
with ``random.Random(seed)`` (deterministic).

Usage (see fuzz/README.md):

    .venv/bin/python fuzz/fuzz_load.py --minutes 15 /tmp/hfx-corpus fuzz/corpus
    .venv/bin/python fuzz/fuzz_load.py --engine random --minutes 1 --seed 1 fuzz/corpus
    .venv/bin/python fuzz/fuzz_load.py --repro fuzz/findings/raw/*.bin   # replay, print outcome
"""

from __future__ import annotations

import argparse
import ctypes
import os
import random
import signal
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for _path in (ROOT, HERE):  # hubert_fix; the harness' modules (also when imported as fuzz.fuzz_load)
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from mutation import SEEDS, mutate  # noqa: E402
from target import FINDINGS, MEM_BYTES, STATS, TIMEOUT_S, import_project, limits, run_one, signature, test_one_input  # noqa: E402


def _corpus_files(dirs: list[str]) -> list[Path]:
    files: list[Path] = []
    for d in dirs:
        p = Path(d)
        files += sorted(f for f in p.iterdir() if f.is_file()) if p.is_dir() else [p]
    return files


def run_random(corpus: list[str], minutes: float, runs: int, seed: int) -> None:
    seeds = [f.read_bytes() for f in _corpus_files(corpus)]
    SEEDS[:] = seeds
    if not seeds:
        sys.exit("fuzz_load: empty corpus (run fuzz/make_corpus.py)")
    rng = random.Random(seed)
    deadline = time.monotonic() + minutes * 60 if minutes else float("inf")
    pool = list(seeds)
    while time.monotonic() < deadline and (not runs or STATS.execs < runs):
        data = rng.choice(pool)
        if STATS.execs >= len(seeds):  # first pass: the seeds as they are
            data = mutate(data, 1 << 22, rng.randrange(2**32))
            if rng.random() < 0.3:  # stack mutations now and then
                data = mutate(data, 1 << 22, rng.randrange(2**32))
        else:
            data = seeds[STATS.execs]
        test_one_input(data)
    print(STATS.line(), file=sys.stderr, flush=True)
    sys.exit(1 if STATS.findings else 0)


_FINAL: list[object] = []
#: libFuzzer's handlers of these turn a crash into exit 77 and a crash- artifact, also in a
#: forked child, where hubert-fix's isolation (and post_tools' alarm) expect death by the signal.
_DEADLY = (signal.SIGSEGV, signal.SIGBUS, signal.SIGABRT, signal.SIGILL, signal.SIGFPE, signal.SIGXFSZ, signal.SIGALRM)


def _default_handlers() -> None:
    for number in _DEADLY:
        signal.signal(number, signal.SIG_DFL)


def run_atheris(argv: list[str], minutes: float) -> None:
    import atheris

    import_project(instrument=True)
    SEEDS[:] = [f.read_bytes() for f in _corpus_files([str(HERE / "corpus")])]
    flags = {a.split("=")[0] for a in argv if a.startswith("-")}
    defaults = {
        "-rss_limit_mb": "0",  # RLIMIT_AS bounds memory; a blow-up is recorded, not fatal
        "-malloc_limit_mb": "0",
        "-timeout": "120",  # wall-clock backstop for a hang inside C++ (the CPU alarm handles the rest)
        "-max_len": str(4 << 20),
        "-len_control": "0",
        "-print_final_stats": "1",
        "-artifact_prefix": str(FINDINGS) + "/",
        "-reload": "0",
    }
    if minutes:
        defaults["-max_total_time"] = str(int(minutes * 60))
    FINDINGS.mkdir(parents=True, exist_ok=True)
    extra = [f"{k}={v}" for k, v in defaults.items() if k not in flags]
    argv = [argv[0], *extra, *argv[1:]]
    # libFuzzer ends the process with C's exit(), which runs no Python atexit handler: the
    # final progress line is registered with the C library's (the callback kept alive in _FINAL)
    _FINAL.append(ctypes.CFUNCTYPE(None, ctypes.c_void_p)(lambda _: print(STATS.line(), file=sys.stderr, flush=True)))
    ctypes.CDLL(None).__cxa_atexit(_FINAL[-1], None, None)
    os.register_at_fork(after_in_child=_default_handlers)  # a child crashes as without libFuzzer
    atheris.Setup(argv, test_one_input, custom_mutator=lambda d, n, s: mutate(d, n, s, atheris.Mutate))
    atheris.Fuzz()


def repro(paths: list[str]) -> int:
    """Replay inputs without swallowing: print each outcome, or the traceback of a finding."""
    import_project()
    worst = 0
    for p in _corpus_files(paths):
        start = time.process_time()
        try:
            outcome = run_one(p.read_bytes())
            print(f"{p}: ok: {outcome} ({time.process_time() - start:.1f} s CPU)")
        except BaseException as exc:  # noqa: BLE001
            worst = 1
            print(f"{p}: FINDING: {signature(exc)[1]}: {str(exc)[:300]} ({time.process_time() - start:.1f} s CPU)")
            if os.environ.get("FUZZ_VERBOSE"):
                traceback.print_exception(type(exc), exc, exc.__traceback__)
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    parser.add_argument("--engine", choices=["auto", "atheris", "random"], default="auto")
    parser.add_argument(
        "--minutes", type=float, default=0, help="stop after this long (0: no limit / libFuzzer's flags)"
    )
    parser.add_argument("--runs", type=int, default=0, help="random engine: stop after this many inputs")
    parser.add_argument("--seed", type=int, default=1, help="random engine: RNG seed")
    parser.add_argument("--repro", action="store_true", help="replay the given files/folders and print outcomes")
    args, rest = parser.parse_known_args()
    limits()
    if args.repro:
        sys.exit(repro(rest))
    engine = args.engine
    if engine == "auto":
        try:
            import atheris  # noqa: F401

            engine = "atheris"
        except ImportError:
            engine = "random"
    print(
        f"fuzz_load: engine {engine}, RLIMIT_AS {MEM_BYTES >> 20} MiB, {TIMEOUT_S:g} s CPU per input, findings in {FINDINGS}",
        file=sys.stderr,
        flush=True,
    )
    if engine == "atheris":
        run_atheris([sys.argv[0], *rest], args.minutes)
    else:
        import_project()
        run_random(
            [a for a in rest if not a.startswith("-")] or [str(HERE / "corpus")], args.minutes, args.runs, args.seed
        )


if __name__ == "__main__":
    main()
