#!/usr/bin/env python3
"""Fuzz harness: damaged ONNX files through load_model, check, repair and save_model.

The project's rule (README, "Bad input"): every damaged or hostile input ends as a
``HubertFixError`` (UnusableInputError exit 2, UnrepairableError exit 3), in seconds
and bounded memory. Anything else is a *finding*:

* another exception type (KeyError, MemoryError, RecursionError, ...);
* more than ``FUZZ_TIMEOUT`` seconds of CPU for one input (default 10);
* an out-of-memory that the code swallowed (a log line with ``bad_alloc`` or
  ``MemoryError``) or a jump of the process's peak RSS over ``FUZZ_RSS_MB`` (2048);
* a repaired model that our own ``load_model`` then refuses.

Input format: plain bytes are written as ``model.onnx``. Bytes that start with
``HFXS`` + a little-endian uint32 N are split: N bytes of ``model.onnx``, the rest as
``weights.bin`` beside it, so external-data stubs (``location: weights.bin``) are
reached. ``make_corpus.py`` writes seeds in both forms.

Engines: atheris (libFuzzer, coverage-guided, with a structure-aware mutator that
parses the ModelProto and damages one field at a time; libFuzzer's byte mutator is used
for a share of the inputs) or, with ``--engine random`` or when atheris is missing, a
plain mutation loop over the corpus with ``random.Random(seed)`` (deterministic).

Findings do not stop the run: the first input of each distinct signature (exception
type + innermost frame + innermost hubert_fix frame) is saved to
``fuzz/findings/raw/<sig>.bin`` with a ``.txt`` traceback (``FUZZ_RAISE=1`` re-raises
instead, for libFuzzer's own crash handling and minimization).

Usage (see fuzz/README.md):

    .venv/bin/python fuzz/fuzz_load.py --minutes 15 /tmp/hfx-corpus fuzz/corpus
    .venv/bin/python fuzz/fuzz_load.py --engine random --minutes 1 --seed 1 fuzz/corpus
    .venv/bin/python fuzz/fuzz_load.py --repro fuzz/findings/raw/*.bin   # replay, print outcome
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import logging
import os
import random
import resource
import signal
import struct
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for _path in (ROOT, HERE):  # hubert_fix; graph_mutator (also when imported as fuzz.fuzz_load)
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

MAGIC = b"HFXS"
SIDE_NAME = "weights.bin"
TIMEOUT_S = float(os.environ.get("FUZZ_TIMEOUT", "10"))
MEM_BYTES = int(os.environ.get("FUZZ_MEM_BYTES", str(4 << 30)))
RSS_FINDING_MB = int(os.environ.get("FUZZ_RSS_MB", "2048"))
RAISE = os.environ.get("FUZZ_RAISE") == "1"
FINDINGS = Path(os.environ.get("FUZZ_FINDINGS", HERE / "findings" / "raw"))


# ---------------------------------------------------------------- packing


def pack(model: bytes, side: bytes | None = None) -> bytes:
    """One fuzz input: the model alone, or model + side file ``weights.bin``."""
    if side is None:
        return model
    return MAGIC + struct.pack("<I", len(model)) + model + side


def unpack(data: bytes) -> tuple[bytes, bytes | None]:
    if len(data) >= 8 and data[:4] == MAGIC:
        (size,) = struct.unpack("<I", data[4:8])
        return data[8 : 8 + size], data[8 + size :]
    return data, None


# ---------------------------------------------------------------- target


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


def _import_project(instrument: bool = False) -> None:
    """Import the code under test (under atheris' instrumentation when fuzzing)."""
    ctx = contextlib.nullcontext()
    if instrument:
        import atheris

        ctx = atheris.instrument_imports(include=["hubert_fix", "onnx_graphsurgeon"])
    with ctx:
        from onnx_graphsurgeon.logger import G_LOGGER

        from hubert_fix import errors, runner
        from hubert_fix.onnxio import files as model_io
    _api.update(errors=errors, model_io=model_io, runner=runner)
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
    errors, model_io, runner = _api["errors"], _api["model_io"], _api["runner"]
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
                loaded = model_io.load_model(path)
                runner.check(loaded.proto, str(path))
                runner.repair(loaded.proto, str(path))
                model_io.save_model(loaded, out)
                outcome = "repaired"
            except errors.HubertFixError as exc:
                outcome = type(exc).__name__
            else:
                try:
                    model_io.load_model(out)
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
        self.peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024

    def line(self) -> str:
        took = time.monotonic() - self.start
        return (
            f"fuzz_load: {self.execs} execs in {took:.0f} s ({self.execs / max(took, 1e-9):.2f}/s); "
            f"reached the passes {self.reached} ({100 * self.reached / max(self.execs, 1):.0f}%); "
            f"outcomes {dict(sorted(self.outcomes.items()))}; "
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


# ---------------------------------------------------------------- structure-aware mutator

INTS = [
    0,
    1,
    -1,
    2,
    3,
    4,
    7,
    8,
    16,
    64,
    255,
    256,
    1023,
    1024,
    4096,
    65535,
    2**31 - 1,
    2**31,
    -(2**31),
    2**32,
    2**40,
    2**62,
    0x0500000000000004,
    2**63 - 1,
    -(2**63),
]
FLOATS = [0.0, -0.0, 1.0, -1.0, 1e-45, 1e38, 3.4e38, float("inf"), float("-inf"), float("nan")]
DTYPES = list(range(0, 27)) + [27, 30, 39, 100, 2**31 - 1, -1]
OPS = [
    "Where",
    "Slice",
    "Reshape",
    "Expand",
    "ConstantOfShape",
    "Range",
    "Tile",
    "Pad",
    "Gather",
    "Shape",
    "Unsqueeze",
    "Squeeze",
    "Concat",
    "Cast",
    "Loop",
    "If",
    "Scan",
    "Identity",
    "Add",
    "MatMul",
    "Resize",
    "Split",
    "NoSuchOp",
]
DOMAINS = ["", "ai.onnx", "com.microsoft", "ai.onnx.ml", "bogus.domain", "pkg.onnxscript.torch_lib"]
LOCATIONS = [
    SIDE_NAME,
    SIDE_NAME,
    SIDE_NAME,
    "model.onnx",
    "",
    ".",
    "..",
    "../weights.bin",
    "/etc/passwd",
    "missing.bin",
    "out",
    "weights.bin/x",
    "a" * 300,
    "wei\x00ghts.bin",
]


def _interesting_int(rng: random.Random, old: int = 0) -> int:
    return rng.choice(
        [rng.choice(INTS), old + rng.choice([-1, 1]), old * rng.choice([2, -1, 1 << 32]), old | 1 << rng.randrange(63)]
    )


def _clamp64(value: int) -> int:
    return max(-(2**63), min(2**63 - 1, value))


class Mutator:
    def __init__(self, model, side: bytes | None, rng: random.Random) -> None:
        import onnx

        self.onnx, self.m, self.side, self.rng = onnx, model, side, rng

    # each returns True when it changed something
    def _pick(self, seq):
        return self.rng.choice(seq) if len(seq) else None

    def _nodes(self):
        """Nodes of the main graph and of any subgraph attribute."""
        out, todo = [], [self.m.graph]
        while todo:
            graph = todo.pop()
            for node in graph.node:
                out.append((graph, node))
                for attr in node.attribute:
                    if attr.HasField("g"):
                        todo.append(attr.g)
                    todo.extend(attr.graphs)
        return out

    def init_dtype(self):
        t = self._pick(self.m.graph.initializer)
        if t is None:
            return False
        t.data_type = self.rng.choice(DTYPES)
        return True

    def init_dims(self):
        t = self._pick(self.m.graph.initializer)
        if t is None:
            return False
        r = self.rng.random()
        if r < 0.2 or not t.dims:
            t.dims.append(self.rng.choice([0, 1, 2, -1, 2**31, 2**62]))
        elif r < 0.35:
            del t.dims[self.rng.randrange(len(t.dims))]
        else:
            i = self.rng.randrange(len(t.dims))
            t.dims[i] = _clamp64(_interesting_int(self.rng, t.dims[i]))
        return True

    def init_data(self):
        t = self._pick(self.m.graph.initializer)
        if t is None:
            return False
        r = self.rng.random()
        if t.raw_data and r < 0.4:
            t.raw_data = t.raw_data[: self.rng.randrange(len(t.raw_data) + 1)]
        elif t.raw_data and r < 0.6:
            t.raw_data = t.raw_data + os.urandom(self.rng.choice([1, 3, 4, 8, 1025]))
        elif r < 0.8:
            raw = t.raw_data
            t.ClearField("raw_data")
            t.float_data.extend(
                [self.rng.choice(FLOATS) for _ in range(max(1, len(raw) // 4 + self.rng.choice([-1, 0, 1])))]
            )
        else:
            t.string_data.append(os.urandom(self.rng.randrange(1, 9)))
        return True

    def init_external(self):
        """Move an initializer's bytes into weights.bin and point at them (sometimes wrongly)."""
        tensors = [t for t in self.m.graph.initializer if t.raw_data] or list(self.m.graph.initializer)
        t = self._pick(tensors)
        if t is None:
            return False
        side = bytearray(self.side or b"")
        offset = len(side)
        if self.rng.random() < 0.5:
            offset = -(-offset // 4096) * 4096
            side += bytes(offset - len(side))
        side += t.raw_data
        length = len(t.raw_data)
        self.side = bytes(side)
        if self.rng.random() < 0.8:
            t.ClearField("raw_data")
        del t.external_data[:]
        t.data_location = self.onnx.TensorProto.EXTERNAL if self.rng.random() < 0.9 else self.rng.choice([0, 2, 7])
        entries = {"location": SIDE_NAME, "offset": str(offset), "length": str(length)}
        r = self.rng.random()
        if r < 0.15:
            entries["location"] = self.rng.choice(LOCATIONS)
        elif r < 0.3:
            entries["offset"] = str(_interesting_int(self.rng, offset))
        elif r < 0.45:
            entries["length"] = self.rng.choice(
                [str(_interesting_int(self.rng, length)), "", "12abc", "0x10", " 4", "1e3"]
            )
        elif r < 0.5:
            del entries[self.rng.choice(list(entries))]
        elif r < 0.55:
            entries["checksum"] = "0"
        for key, value in entries.items():
            t.external_data.add(key=key, value=value)
        if self.rng.random() < 0.05:
            t.external_data.add(key="location", value=self.rng.choice(LOCATIONS))  # duplicate key
        return True

    def side_damage(self):
        if self.side is None:
            return False
        r = self.rng.random()
        if r < 0.4:
            self.side = self.side[: self.rng.randrange(len(self.side) + 1)]
        elif r < 0.7:
            self.side = b""
        else:
            self.side += os.urandom(self.rng.randrange(1, 64))
        return True

    def _int_tensors(self):
        out = []
        for _, node in self._nodes():
            if node.op_type in ("Constant", "ConstantOfShape"):
                out += [a.t for a in node.attribute if a.HasField("t")]
        out += [t for t in self.m.graph.initializer if t.data_type in (6, 7) and len(t.raw_data) <= 64]
        return out

    def const_value(self):
        """Change one element of a small int Constant/initializer (shape vectors, axes, indices)."""
        from onnx import numpy_helper

        t = self._pick(self._int_tensors())
        if t is None:
            return False
        try:
            arr = numpy_helper.to_array(t).copy()
        except Exception:  # noqa: BLE001
            return False
        if arr.size == 0:
            return False
        i = self.rng.randrange(arr.size)
        if arr.dtype.kind in "iu":
            info = __import__("numpy").iinfo(arr.dtype)
            arr.flat[i] = max(info.min, min(info.max, _interesting_int(self.rng, int(arr.flat[i]))))
        elif arr.dtype.kind == "f":
            arr.flat[i] = self.rng.choice(FLOATS)
        else:
            return False
        t.CopyFrom(numpy_helper.from_array(arr, t.name))
        return True

    def attr_mutate(self):
        _, node = self._pick(self._nodes()) or (None, None)
        if node is None:
            return False
        attr = self._pick(node.attribute)
        r = self.rng.random()
        A = self.onnx.AttributeProto
        if attr is None or r < 0.1:
            node.attribute.add(
                name=self.rng.choice(["axis", "axes", "perm", "to", "value", "bogus", ""]),
                type=self.rng.choice([A.INT, A.INTS, A.FLOAT, A.STRING, A.TENSOR, A.GRAPH]),
                i=self.rng.choice(INTS),
            )
            return True
        if r < 0.2:
            node.attribute.remove(attr)
        elif r < 0.3:
            attr.type = self.rng.choice(
                [0, A.INT, A.INTS, A.FLOAT, A.FLOATS, A.STRING, A.TENSOR, A.GRAPH, A.GRAPHS, 99]
            )
        elif attr.ints and r < 0.7:
            i = self.rng.randrange(len(attr.ints))
            if self.rng.random() < 0.2:
                attr.ints.append(self.rng.choice(INTS))
            else:
                attr.ints[i] = _clamp64(_interesting_int(self.rng, attr.ints[i]))
        elif attr.HasField("i") or attr.type == A.INT:
            attr.i = _clamp64(_interesting_int(self.rng, attr.i))
        elif attr.HasField("f"):
            attr.f = self.rng.choice(FLOATS)
        elif attr.HasField("s"):
            attr.s = self.rng.choice([b"", b"bogus", b"\xff\xfe", os.urandom(4)])
        elif attr.HasField("t"):
            attr.t.data_type = self.rng.choice(DTYPES)
        else:
            attr.name = self.rng.choice(["", "x", attr.name + "_"])
        return True

    def _names(self):
        g = self.m.graph
        names = [n for _, node in self._nodes() for n in [*node.input, *node.output]]
        names += [t.name for t in g.initializer] + [v.name for v in g.input]
        return names or ["x"]

    def node_io(self):
        graph, node = self._pick(self._nodes()) or (None, None)
        if node is None:
            return False
        r = self.rng.random()
        names = self._names()
        if node.input and r < 0.35:
            node.input[self.rng.randrange(len(node.input))] = self.rng.choice(
                names + ["", "nowhere", node.output[0] if node.output else "x"]
            )
        elif node.output and r < 0.55:
            node.output[self.rng.randrange(len(node.output))] = self.rng.choice(names + ["", "dup"])
        elif node.input and r < 0.7:
            del node.input[self.rng.randrange(len(node.input))]
        elif r < 0.85:
            node.input.append(self.rng.choice(names + [""]))
        else:
            node.output.append(self.rng.choice(["extra_out", *names[:3]]))
        return True

    def node_op(self):
        _, node = self._pick(self._nodes()) or (None, None)
        if node is None:
            return False
        if self.rng.random() < 0.75:
            node.op_type = self.rng.choice(OPS + [n.op_type for _, n in self._nodes()[:50]])
        else:
            node.domain = self.rng.choice(DOMAINS)
        return True

    def node_struct(self):
        g = self.m.graph
        if not g.node:
            return False
        r = self.rng.random()
        i = self.rng.randrange(len(g.node))
        if r < 0.4:
            del g.node[i]
        elif r < 0.7:
            j = self.rng.randrange(len(g.node))
            a, b = self.onnx.NodeProto(), self.onnx.NodeProto()
            a.CopyFrom(g.node[i])
            b.CopyFrom(g.node[j])
            g.node[i].CopyFrom(b)
            g.node[j].CopyFrom(a)
        elif r < 0.85:
            g.node.add().CopyFrom(g.node[i])
        else:  # wrap a node into an If's then/else branches (subgraph that uses outer names)
            node = g.node[i]
            sub = self.onnx.helper.make_graph(
                [node], "branch", [], [self.onnx.helper.make_tensor_value_info(o, 0, None) for o in node.output]
            )
            cond = self.rng.choice(self._names())
            wrapper = self.onnx.helper.make_node(
                "If", [cond], list(node.output), name=node.name + "_if", then_branch=sub, else_branch=sub
            )
            g.node[i].CopyFrom(wrapper)
        return True

    def graph_io(self):
        g = self.m.graph
        infos = [*g.input, *g.output, *g.value_info]
        info = self._pick(infos)
        if info is None:
            return False
        r = self.rng.random()
        tt = info.type.tensor_type
        if r < 0.2:
            tt.elem_type = self.rng.choice(DTYPES)
        elif r < 0.6 and tt.shape.dim:
            d = tt.shape.dim[self.rng.randrange(len(tt.shape.dim))]
            if self.rng.random() < 0.5:
                d.dim_value = _clamp64(_interesting_int(self.rng, d.dim_value))
            else:
                d.dim_param = self.rng.choice(["batch", "samples", "", "unk__0", "N", "x" * 200])
        elif r < 0.7:
            tt.ClearField("shape") if self.rng.random() < 0.5 else tt.shape.dim.add(
                dim_value=self.rng.choice([1, 0, 32])
            )
        elif r < 0.8:
            info.type.ClearField("tensor_type")
            info.type.sequence_type.elem_type.tensor_type.elem_type = 1
        elif r < 0.9:
            info.name = self.rng.choice(self._names() + ["", "renamed"])
        else:
            seq = self.rng.choice([g.input, g.output])
            if len(seq) and self.rng.random() < 0.5:
                del seq[self.rng.randrange(len(seq))]
            else:
                seq.add().CopyFrom(self.onnx.helper.make_tensor_value_info(self.rng.choice(self._names()), 1, None))
        return True

    def model_meta(self):
        m = self.m
        r = self.rng.random()
        if r < 0.25:
            m.ir_version = self.rng.choice([0, 1, 3, 4, 6, 7, 8, 9, 10, 11, 12, 13, 100, 2**31, 2**62])
        elif r < 0.55 and m.opset_import:
            op = self.rng.choice(m.opset_import)
            op.version = self.rng.choice(
                [0, 1, 6, 7, 9, 10, 11, 12, 13, 17, 18, 20, 21, 22, 23, 24, 25, 30, 1000, 2**40, -1]
            )
        elif r < 0.65:
            m.opset_import.add(domain=self.rng.choice(DOMAINS), version=self.rng.choice([1, 2, 17, 99]))
        elif r < 0.75 and m.opset_import:
            del m.opset_import[self.rng.randrange(len(m.opset_import))]
        elif r < 0.9:
            m.metadata_props.add(
                key=self.rng.choice(["hubert_fix.repair", "hubert_fix.output_layer", "x"]),
                value=self.rng.choice(["", "{", "null", "[]", '{"edits": 5}', "7", "\udcff" if False else "é"]),
            )
        else:
            f = m.functions.add(
                name=self.rng.choice(["Where", "LayerNormalization", "f"]), domain=self.rng.choice(["", "custom"])
            )
            f.opset_import.add(domain="", version=17)
            if self.m.graph.node:
                f.node.add().CopyFrom(self.rng.choice(self.m.graph.node))
            f.input.extend(list(f.node[0].input) if f.node else [])
            f.output.extend(list(f.node[0].output) if f.node else [])
        return True

    def dup_names(self):
        g = self.m.graph
        if not g.initializer:
            return False
        t = self.rng.choice(g.initializer)
        r = self.rng.random()
        if r < 0.4:
            g.initializer.add().CopyFrom(t)
        elif r < 0.7:
            g.input.add().CopyFrom(
                self.onnx.helper.make_tensor_value_info(t.name, self.rng.choice([t.data_type, 1, 7]), list(t.dims))
            )
        else:
            t.name = self.rng.choice(self._names() + [""])
        return True

    def sparse(self):
        g = self.m.graph
        small = [t for t in g.initializer if t.raw_data and len(t.raw_data) <= 256]
        t = self._pick(small)
        if t is None:
            return False
        values = self.onnx.TensorProto()
        values.CopyFrom(t)
        values.ClearField("dims")
        values.dims.append(1)
        values.raw_data = (
            t.raw_data[: self.onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize]
            if t.data_type in (1, 6, 7, 10, 11)
            else t.raw_data[:4]
        )
        idx = self.onnx.helper.make_tensor("idx", 7, [1], [self.rng.choice([0, -1, 5, 2**40])])
        sp = g.sparse_initializer.add()
        sp.values.CopyFrom(values)
        sp.indices.CopyFrom(idx)
        sp.dims.extend(t.dims)
        g.initializer.remove(t)
        return True

    MUTATIONS = [
        "init_dtype",
        "init_dims",
        "init_data",
        "init_external",
        "init_external",
        "side_damage",
        "const_value",
        "const_value",
        "const_value",
        "attr_mutate",
        "attr_mutate",
        "node_io",
        "node_op",
        "node_struct",
        "graph_io",
        "graph_io",
        "model_meta",
        "dup_names",
        "sparse",
    ]

    def mutate(self) -> None:
        for _ in range(self.rng.choice([1, 1, 1, 2, 2, 3])):
            for _attempt in range(5):
                try:
                    if getattr(self, self.rng.choice(self.MUTATIONS))():
                        break
                except Exception:  # noqa: BLE001 - a mutation that does not apply
                    continue


def _flip_bytes(data: bytes, rng: random.Random) -> bytes:
    buf = bytearray(data)
    if not buf:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64)))
    for _ in range(rng.choice([1, 1, 2, 4, 8])):
        r = rng.random()
        i = rng.randrange(len(buf))
        if r < 0.6:
            buf[i] = rng.randrange(256)
        elif r < 0.8:
            del buf[i : i + rng.randrange(1, 64)]
        else:
            buf[i:i] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 16)))
    return bytes(buf)


#: Pristine seeds (fuzz/corpus): a graph-aware mutation of an input that no longer loads
#: starts again from one of them half of the time.
SEEDS: list[bytes] = []
GRAPH_ONLY, GRAPH_THEN_DAMAGE = 0.65, 0.15  # shares of the inputs; the rest: damage only


def mutate(data: bytes, max_size: int, seed: int, byte_mutate=None) -> bytes:
    """Graph-aware (loadable) mutation for 80% of the inputs, 15 points of them damaged
    further; damage only (a field, or bytes) for the rest."""
    rng = random.Random(seed)
    r = rng.random()
    if r < GRAPH_ONLY + GRAPH_THEN_DAMAGE:
        mutant = _graph_mutate(data, rng)
        if mutant is not None:
            return mutant if r < GRAPH_ONLY else _damage(mutant, rng, byte_mutate)
    return _damage(data, rng, byte_mutate)


def _graph_mutate(data: bytes, rng: random.Random) -> bytes | None:
    import graph_mutator

    model_bytes, side = unpack(data)
    mutant = graph_mutator.mutate(model_bytes, rng)
    if mutant is None and SEEDS and rng.random() < 0.5:
        model_bytes, side = unpack(rng.choice(SEEDS))
        mutant = graph_mutator.mutate(model_bytes, rng)
    return None if mutant is None else pack(mutant, side)


def _damage(data: bytes, rng: random.Random, byte_mutate=None) -> bytes:
    """Structure-aware damage of one field; byte-level (libFuzzer's, or random flips) for ~15%."""
    import onnx

    model_bytes, side = unpack(data)
    if rng.random() < 0.15:
        target = rng.choice(["model", "side"]) if side else "model"
        blob = model_bytes if target == "model" else side
        blob = byte_mutate(blob, len(blob) + 64) if byte_mutate else _flip_bytes(blob, rng)
        return pack(blob, side) if target == "model" else pack(model_bytes, blob)
    model = onnx.ModelProto()
    try:
        model.ParseFromString(model_bytes)
    except Exception:  # noqa: BLE001 - an earlier byte mutation broke it: keep mutating bytes
        blob = byte_mutate(model_bytes, len(model_bytes) + 64) if byte_mutate else _flip_bytes(model_bytes, rng)
        return pack(blob, side)
    mut = Mutator(model, side, rng)
    mut.mutate()
    try:
        out = model.SerializeToString()
    except Exception:  # noqa: BLE001
        return data
    return pack(out, mut.side)


# ---------------------------------------------------------------- engines


def _limits() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    want = MEM_BYTES if hard == resource.RLIM_INFINITY else min(MEM_BYTES, hard)
    resource.setrlimit(resource.RLIMIT_AS, (want, hard))
    signal.signal(signal.SIGPROF, _on_cpu_timeout)


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


def run_atheris(argv: list[str], minutes: float) -> None:
    import atheris

    _import_project(instrument=True)
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
    import atexit

    atexit.register(lambda: print(STATS.line(), file=sys.stderr, flush=True))
    atheris.Setup(argv, test_one_input, custom_mutator=lambda d, n, s: mutate(d, n, s, atheris.Mutate))
    atheris.Fuzz()


def repro(paths: list[str]) -> int:
    """Replay inputs without swallowing: print each outcome, or the traceback of a finding."""
    _import_project()
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
    _limits()
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
        _import_project()
        run_random(
            [a for a in rest if not a.startswith("-")] or [str(HERE / "corpus")], args.minutes, args.runs, args.seed
        )


if __name__ == "__main__":
    main()
