"""How bench/run.py times things: a command as a whole process (wall time, peak RSS), and runners
taken in turn within rounds, so that load changes on a shared machine hit all alike."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HUBERT_FIX = Path(sys.executable).parent / "hubert-fix"


# Runs one command and reports its own wall time and peak RSS. A small process of its own,
# because Linux keeps ru_maxrss across exec: a child forked from this (large) process
# would report this process's size. ru_maxrss is the largest single process's peak (the
# command's or a child's it waited for); a forked child that works while its parent holds
# memory (optimize's OpenVINO conversion) is seen in the other figure: the largest sum of
# the PSS (shared pages split among their sharers) of the command's process tree, sampled
# every 20 ms from /proc (Linux). Both in MB (10^6 bytes; the kernel counts KiB), as the files'
# sizes are, so that their ratio is the file's multiple.
_MEASURE = """
import json, os, subprocess, sys, threading, time
def tree(root):
    children = {}
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as stat:
                children.setdefault(int(stat.read().rsplit(")", 1)[1].split()[1]), []).append(int(entry))
        except (OSError, ValueError, IndexError):
            pass
    found, todo = [], [root]
    while todo:
        found.append(todo.pop())
        todo += children.get(found[-1], [])
    return found
def pss(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup") as rollup:
            return next((int(line.split()[1]) for line in rollup if line.startswith("Pss:")), 0)
    except OSError:
        return 0
start = time.perf_counter()
out = os.environ.get("BENCH_STDOUT")
child = subprocess.Popen(sys.argv[1:], stdout=open(out, "w") if out else subprocess.DEVNULL)
done, peak = threading.Event(), [0]
def sample():
    while not done.wait(0.02):
        peak[0] = max(peak[0], sum(pss(pid) for pid in tree(child.pid)))
sampler = threading.Thread(target=sample)
sampler.start()
_, status, usage = os.wait4(child.pid, 0)
done.set()
sampler.join()
print(json.dumps({"seconds": round(time.perf_counter() - start, 3), "peak_rss_mb": round(usage.ru_maxrss * 1024 / 1e6, 1),
                  "tree_pss_mb": round(peak[0] * 1024 / 1e6, 1), "exit": os.waitstatus_to_exitcode(status)}))
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
