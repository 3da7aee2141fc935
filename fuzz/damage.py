"""The damaging mutator: one field of the ModelProto broken at a time, or bytes flipped.

Damage to nodes (inputs, outputs, op types, domains, order, If wrappers), attributes,
graph inputs/outputs/value_info and model fields (IR version, opsets, metadata,
functions), on top of ``damage_weights.WeightDamage`` (initializers, external data, the
side file, constants). About 15% of the inputs get byte-level mutations instead
(libFuzzer's, or random flips). Most of these mutants are refused at load: that is what
they test (``graph_mutator`` makes the mutants that load).
"""

from __future__ import annotations

import os
import random

from damage_weights import DTYPES, FLOATS, INTS, WeightDamage, clamp64, interesting_int
from packing import pack, unpack

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


class Mutator(WeightDamage):
    """One to three damaging mutations of a parsed ModelProto (``mutate``), in place."""

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
                attr.ints[i] = clamp64(interesting_int(self.rng, attr.ints[i]))
        elif attr.HasField("i") or attr.type == A.INT:
            attr.i = clamp64(interesting_int(self.rng, attr.i))
        elif attr.HasField("f"):
            attr.f = self.rng.choice(FLOATS)
        elif attr.HasField("s"):
            attr.s = self.rng.choice([b"", b"bogus", b"\xff\xfe", os.urandom(4)])
        elif attr.HasField("t"):
            attr.t.data_type = self.rng.choice(DTYPES)
        else:
            attr.name = self.rng.choice(["", "x", attr.name + "_"])
        return True

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
                d.dim_value = clamp64(interesting_int(self.rng, d.dim_value))
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


def flip_bytes(data: bytes, rng: random.Random) -> bytes:
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


def damage(data: bytes, rng: random.Random, byte_mutate=None) -> bytes:
    """Structure-aware damage of one field; byte-level (libFuzzer's, or random flips) for ~15%."""
    import onnx

    model_bytes, side = unpack(data)
    if rng.random() < 0.15:
        target = rng.choice(["model", "side"]) if side else "model"
        blob = model_bytes if target == "model" else side
        blob = byte_mutate(blob, len(blob) + 64) if byte_mutate else flip_bytes(blob, rng)
        return pack(blob, side) if target == "model" else pack(model_bytes, blob)
    model = onnx.ModelProto()
    try:
        model.ParseFromString(model_bytes)
    except Exception:  # noqa: BLE001 - an earlier byte mutation broke it: keep mutating bytes
        blob = byte_mutate(model_bytes, len(model_bytes) + 64) if byte_mutate else flip_bytes(model_bytes, rng)
        return pack(blob, side)
    mut = Mutator(model, side, rng)
    mut.mutate()
    try:
        out = model.SerializeToString()
    except Exception:  # noqa: BLE001
        return data
    return pack(out, mut.side)
