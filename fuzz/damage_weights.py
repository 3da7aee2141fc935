"""Damage to weights: initializers' dtypes, dims and bytes, external data, the side file,
small integer constants, duplicate names, sparse initializers.

``WeightDamage`` holds the helpers the damaging mutator shares (``damage.Mutator`` adds
the damage to nodes, attributes, graph inputs/outputs and model fields). Each mutation
changes one field of the parsed ModelProto and returns True when it changed something.
"""

from __future__ import annotations

import os
import random

from packing import SIDE_NAME

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


def interesting_int(rng: random.Random, old: int = 0) -> int:
    return rng.choice(
        [rng.choice(INTS), old + rng.choice([-1, 1]), old * rng.choice([2, -1, 1 << 32]), old | 1 << rng.randrange(63)]
    )


def clamp64(value: int) -> int:
    return max(-(2**63), min(2**63 - 1, value))


class WeightDamage:
    """Damage to weights and constants, and the helpers every damaging mutation uses."""

    def __init__(self, model, side: bytes | None, rng: random.Random) -> None:
        import onnx

        self.onnx, self.m, self.side, self.rng = onnx, model, side, rng

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

    def _names(self):
        g = self.m.graph
        names = [n for _, node in self._nodes() for n in [*node.input, *node.output]]
        names += [t.name for t in g.initializer] + [v.name for v in g.input]
        return names or ["x"]

    # each mutation returns True when it changed something
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
            t.dims[i] = clamp64(interesting_int(self.rng, t.dims[i]))
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
            entries["offset"] = str(interesting_int(self.rng, offset))
        elif r < 0.45:
            entries["length"] = self.rng.choice(
                [str(interesting_int(self.rng, length)), "", "12abc", "0x10", " 4", "1e3"]
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
            arr.flat[i] = max(info.min, min(info.max, interesting_int(self.rng, int(arr.flat[i]))))
        elif arr.dtype.kind == "f":
            arr.flat[i] = self.rng.choice(FLOATS)
        else:
            return False
        t.CopyFrom(numpy_helper.from_array(arr, t.name))
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
