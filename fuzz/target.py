"""The target: one fuzz input through load_model, check, repair and save_model, judged.

The project's rule (README, "Bad input"): every damaged or hostile input ends as a
``HubertFixError`` (UnusableInputError exit 2, UnrepairableError exit 3), in seconds
and bounded memory. Anything else is a *finding*:

* another exception type (KeyError, MemoryError, RecursionError, ...);
* more than ``FUZZ_TIMEOUT`` seconds of CPU for one input (default 10);
* an out-of-memory that the code swallowed (a log line with ``bad_alloc`` or
  ``MemoryError``) or a jump of the process's peak RSS over ``FUZZ_RSS_MB`` (2048);
* a repaired model that our own ``load_model`` then refuses.

Findings do not stop the run: the first input of each distinct signature (exception
type + innermost frame + innermost hubert_fix frame) is saved to
``fuzz/findings/raw/<sig>.bin`` with a ``.txt`` traceback (``FUZZ_RAISE=1`` re-raises
instead, for libFuzzer's own crash handling and minimization). ``STATS`` counts the
inputs, their outcomes, those that reached the passes and the findings, for the
progress line.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import resource
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

from packing import SIDE_NAME, unpack

HERE = Path(__file__).resolve().parent
TIMEOUT_S = float(os.environ.get("FUZZ_TIMEOUT", "10"))
MEM_BYTES = int(os.environ.get("FUZZ_MEM_BYTES", str(4 << 30)))
RSS_FINDING_MB = int(os.environ.get("FUZZ_RSS_MB", "2048"))
RAISE = os.environ.get("FUZZ_RAISE") == "1"
FINDINGS = Path(os.environ.get("FUZZ_FINDINGS", HERE / "findings" / "raw"))


class Finding(BaseException):
    """Raised by the harness itself (BaseException: no ``except Exception`` in the code swallows it)."""


class CpuTimeout(Finding):
    pass


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


_records = _Records()
_api: dict[str, object] = {}


def import_project(instrument: bool = False) -> None:
    """Import the code under test (under atheris' instrumentation when fuzzing)."""
    ctx = contextlib.nullcontext()
    if instrument:
        import atheris

        ctx = atheris.instrument_imports(include=["hubert_fix", "onnx_graphsurgeon"])
    with ctx:
        from onnx_graphsurgeon.logger import G_LOGGER

        from hubert_fix import errors, runner
        from hubert_fix.onnxio import reading, writing
    _api.update(errors=errors, reading=reading, writing=writing, runner=runner)
    analyze = runner.analyze

    def counted(graph):  # runner calls it before each pass: the input reached the passes
        STATS.reached_now = True
        return analyze(graph)

    runner.analyze = counted
    # quiet: no output per input; warnings are kept for the swallowed-OOM check
    log = logging.getLogger("hubert_fix")
    log.handlers[:] = [_records]
    log.propagate = False
    log.setLevel(logging.WARNING)
    G_LOGGER.severity = G_LOGGER.CRITICAL
    with contextlib.suppress(Exception):
        import onnxruntime as ort

        ort.set_default_logger_severity(4)


def _on_cpu_timeout(signum, frame):  # noqa: ARG001
    raise CpuTimeout(f"over {TIMEOUT_S:g} s of CPU time for one input")


def run_one(data: bytes) -> str:
    """Load, check, repair, save one input; return the expected outcome or raise a finding."""
    errors, reading, writing, runner = _api["errors"], _api["reading"], _api["writing"], _api["runner"]
    model_bytes, side = unpack(data)
    del _records.records[:]
    with tempfile.TemporaryDirectory(prefix="hfx-fuzz-") as tmp:
        folder = Path(tmp)
        path = folder / "model.onnx"
        path.write_bytes(model_bytes)
        if side is not None:
            (folder / SIDE_NAME).write_bytes(side)
        (folder / "out").mkdir()
        out = folder / "out" / "repaired.onnx"
        signal.setitimer(signal.ITIMER_PROF, TIMEOUT_S)
        try:
            try:
                loaded = reading.load_model(path)
                runner.check(loaded.proto, str(path))
                runner.repair(loaded.proto, str(path))
                writing.save_model(loaded, out)
                outcome = "repaired"
            except errors.HubertFixError as exc:
                outcome = type(exc).__name__
            else:
                try:
                    reading.load_model(out)
                except errors.HubertFixError as exc:
                    raise Finding(f"repair wrote a model that load_model refuses: {exc}") from None
        finally:
            signal.setitimer(signal.ITIMER_PROF, 0)
    swallowed = [
        r.getMessage() for r in _records.records if "bad_alloc" in r.getMessage() or "MemoryError" in r.getMessage()
    ]
    if swallowed:
        raise Finding(f"out-of-memory swallowed by the code ({len(swallowed)}x): {swallowed[0]}")
    return outcome


# ---------------------------------------------------------------- findings


class Stats:
    def __init__(self) -> None:
        self.start = time.monotonic()
        self.execs = 0
        self.reached = 0  # inputs that got past load_model into the passes
        self.reached_now = False
        self.outcomes: dict[str, int] = {}
        self.findings: dict[str, int] = {}
        self.post_tried: dict[str, int] = {}  # deployment tools run on a mutant (mutation.post_process)
        self.post_applied: dict[str, int] = {}  # ... whose output loaded and differed
        self.peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024

    def line(self) -> str:
        took = time.monotonic() - self.start
        post = ", ".join(f"{tool} {self.post_applied.get(tool, 0)}/{n}" for tool, n in sorted(self.post_tried.items()))
        return (
            f"fuzz_load: {self.execs} execs in {took:.0f} s ({self.execs / max(took, 1e-9):.2f}/s); "
            f"reached the passes {self.reached} ({100 * self.reached / max(self.execs, 1):.0f}%); "
            f"outcomes {dict(sorted(self.outcomes.items()))}; "
            f"post-processed (applied/tried) {post or '-'}; "
            f"findings {sum(self.findings.values())} ({len(self.findings)} distinct); peak RSS {self.peak_mb} MB"
        )


STATS = Stats()


def _frame(entry: traceback.FrameSummary) -> str:
    return f"{Path(entry.filename).name}:{entry.lineno}:{entry.name}"


def signature(exc: BaseException) -> tuple[str, str]:
    frames = traceback.extract_tb(exc.__traceback__)
    frames = [f for f in frames if Path(f.filename).resolve() != Path(__file__).resolve()] or frames
    inner = _frame(frames[-1]) if frames else "?"
    ours = [f for f in frames if "hubert_fix" in f.filename or "/passes/" in f.filename]
    project = _frame(ours[-1]) if ours else "-"
    kind = type(exc).__name__
    if isinstance(exc, Finding) and not isinstance(exc, CpuTimeout):
        kind = f"Finding({str(exc).split(':')[0][:40]})"
    if isinstance(exc, CpuTimeout):
        inner = "timeout"  # where the alarm landed is noise
    return kind, f"{kind} @ {inner} | {project}"


def record(data: bytes, exc: BaseException) -> None:
    kind, sig = signature(exc)
    digest = hashlib.sha1(sig.encode()).hexdigest()[:10]
    STATS.findings[sig] = STATS.findings.get(sig, 0) + 1
    if STATS.findings[sig] > 1:
        return
    FINDINGS.mkdir(parents=True, exist_ok=True)
    name = f"{kind.split('(')[0].lower()}-{digest}"
    (FINDINGS / f"{name}.bin").write_bytes(data)
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    (FINDINGS / f"{name}.txt").write_text(f"signature: {sig}\nmessage: {str(exc)[:2000]}\n\n{text}")
    print(f"fuzz_load: NEW FINDING {name}: {sig}: {str(exc)[:200]}", file=sys.stderr, flush=True)


def test_one_input(data: bytes) -> None:
    STATS.execs += 1
    STATS.reached_now = False
    try:
        outcome = run_one(data)
        STATS.outcomes[outcome] = STATS.outcomes.get(outcome, 0) + 1
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
        if peak > RSS_FINDING_MB and STATS.peak_mb <= RSS_FINDING_MB:
            STATS.peak_mb = peak
            raise Finding(f"peak RSS rose to {peak} MB on one input")
        STATS.peak_mb = max(STATS.peak_mb, peak)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001 - every other exception is a finding
        STATS.peak_mb = max(STATS.peak_mb, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
        record(data, exc)
        if RAISE:
            raise
    finally:
        STATS.reached += STATS.reached_now
    if STATS.execs % 100 == 0:
        print(STATS.line(), file=sys.stderr, flush=True)


def limits() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    want = MEM_BYTES if hard == resource.RLIM_INFINITY else min(MEM_BYTES, hard)
    resource.setrlimit(resource.RLIMIT_AS, (want, hard))
    signal.signal(signal.SIGPROF, _on_cpu_timeout)
