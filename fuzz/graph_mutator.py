"""Graph-aware mutations: models that still load, changed where the passes reason.

``damage.Mutator`` damages fields, and most of its mutants are refused at load. The
mutations here keep a model *loadable* (it parses, passes onnx.checker and strict shape
inference, as ``load_model`` needs) while changing what the passes look at: symbolic and
static dims of the inputs, the wiring of Where, Slice, Pad, Expand and ScatterND, small
integer constants, the opset, If branches, the mask's dtype, extra inputs and outputs,
new instances of the Where defect. A mutant that does not load is dropped and another
mutation is tried (``mutate`` returns None when none applies).
"""

from __future__ import annotations

import random

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from hubert_fix.onnxio.checking import checkable
from hubert_fix.onnxio.isolation import ChildError, Crashed, in_child

BOOL, FLOAT, INT64 = TensorProto.BOOL, TensorProto.FLOAT, TensorProto.INT64
SYMBOLS = ["batch", "samples", "time", "frames", "N", "T", "unk__0", "seq"]
STATIC = [1, 2, 3, 16, 32, 400, 1000, 16000]


def loadable(model: onnx.ModelProto) -> bool:
    """What ``load_model`` asks of a graph: the checker and strict shape inference pass.

    Both are C++ and can abort (an assertion in onnx's shape inference did, in a fuzz
    run): they run in a child. A mutant that crashes them counts as loadable, so the
    target sees it: hubert-fix must refuse it with exit 2, not die.
    """

    def check() -> bytes:
        twin = checkable(model)
        onnx.checker.check_model(twin)
        onnx.shape_inference.infer_shapes(twin, check_type=True, strict_mode=True)
        return b""

    try:
        in_child(check)
    except Crashed:
        return True
    except ChildError:  # any refusal: not loadable
        return False
    return True


class GraphMutator:
    def __init__(self, model: onnx.ModelProto, rng: random.Random) -> None:
        self.m, self.g, self.rng = model, model.graph, rng
        self.count = 0
        try:
            inferred = onnx.ModelProto.FromString(
                in_child(lambda: onnx.shape_inference.infer_shapes(checkable(model)).SerializeToString())
            ).graph
        except (Crashed, ChildError):
            inferred = self.g
        self.types: dict[str, tuple[int, list[int | str] | None]] = {}
        for info in [*inferred.input, *inferred.value_info, *inferred.output]:
            tt = info.type.tensor_type
            dims = [d.dim_param or d.dim_value for d in tt.shape.dim] if tt.HasField("shape") else None
            self.types[info.name] = (tt.elem_type, dims)
        for t in self.g.initializer:
            self.types[t.name] = (t.data_type, list(t.dims))

    # ------------------------------------------------------------ helpers

    def _name(self, base: str) -> str:
        self.count += 1
        return f"{base}__g{self.count}_{self.rng.randrange(1 << 20)}"

    def _of(self, elem: int | None = None, rank: int | None = None) -> list[str]:
        return [
            n
            for n, (e, dims) in self.types.items()
            if (elem is None or e == elem) and (rank is None or (dims is not None and len(dims) == rank))
        ]

    def _opset(self) -> int:
        return next((o.version for o in self.m.opset_import if o.domain in ("", "ai.onnx")), 17)

    def _const_node(self, value: np.ndarray) -> str:
        name = self._name("const")
        self.g.node.insert(
            0, helper.make_node("Constant", [], [name], value=numpy_helper.from_array(value, name + "_v"))
        )
        return name

    def _producer_const(self, name: str) -> onnx.TensorProto | None:
        """The TensorProto behind ``name`` when it is a Constant node's output or an initializer."""
        for node in self.g.node:
            if name in node.output and node.op_type == "Constant":
                return next((a.t for a in node.attribute if a.name == "value"), None)
        return next((t for t in self.g.initializer if t.name == name), None)

    def _rewire(self, old: str, new: str, skip: onnx.NodeProto) -> None:
        for node in self.g.node:
            if node is not skip:
                node.input[:] = [new if i == old else i for i in node.input]
        for out in self.g.output:
            if out.name == old:
                out.name = new

    def _nodes(self, op: str) -> list[onnx.NodeProto]:
        return [n for n in self.g.node if n.op_type == op]

    # ------------------------------------------------------------ mutations (True: changed)

    def input_dims(self) -> bool:
        """Rename, share or freeze a dim of a graph input or output (ties the passes prove)."""
        infos = [i for i in [*self.g.input, *self.g.output] if i.type.tensor_type.shape.dim]
        if not infos:
            return False
        info = self.rng.choice(infos)
        dim = self.rng.choice(info.type.tensor_type.shape.dim)
        r = self.rng.random()
        if r < 0.45:
            dim.dim_param = self.rng.choice(SYMBOLS + [self._name("d")])
        elif r < 0.85:
            dim.dim_value = self.rng.choice(STATIC)
        else:  # the same dims on every input: batch 1 (frozen batch) or one time length
            axis = self.rng.randrange(2)
            value = self.rng.choice([1, 32, 400])
            for other in self.g.input:
                dims = other.type.tensor_type.shape.dim
                if len(dims) > axis:
                    dims[axis].dim_value = value
        return True

    def where_wiring(self) -> bool:
        wheres = self._nodes("Where")
        if not wheres:
            return False
        node = self.rng.choice(wheres)
        r = self.rng.random()
        if r < 0.25:
            node.input[1], node.input[2] = node.input[2], node.input[1]
        elif r < 0.5:
            negated = self._name("not")
            self.g.node.append(helper.make_node("Not", [node.input[0]], [negated]))
            node.input[0] = negated
        elif r < 0.8:  # the repaired form (or a wrong axis): Unsqueeze the condition
            axes = [self.rng.choice([-1, 0, 1, 2])]
            out = self._name("unsq")
            if self._opset() >= 13:
                self.g.node.append(
                    helper.make_node("Unsqueeze", [node.input[0], self._const_node(np.array(axes, np.int64))], [out])
                )
            else:
                self.g.node.append(helper.make_node("Unsqueeze", [node.input[0]], [out], axes=axes))
            node.input[0] = out
        else:
            masks = self._of(BOOL)
            if not masks:
                return False
            node.input[0] = self.rng.choice(masks)
        self._topo()
        return True

    def add_where_defect(self) -> bool:
        """``Where(mask[B, T], 0, x[B, T, C])`` on some rank-3 float tensor: the defect, somewhere new."""
        data = [n for n in self._of(FLOAT, 3) if n not in {i.name for i in self.g.initializer}]
        masks = self._of(BOOL, 2) or self._of(BOOL)
        if not data or not masks:
            return False
        x, mask = self.rng.choice(data), self.rng.choice(masks)
        out = self._name("masked")
        node = helper.make_node("Where", [mask, self._const_node(np.array(0.0, np.float32)), x], [out])
        self.g.node.append(node)
        self._rewire(x, out, node)
        self._topo()
        return True

    def window_constants(self) -> bool:
        """Change starts/ends/axes/steps of a Slice, the pads of a Pad or the shape of an Expand."""
        choices = [(n, i) for n in self._nodes("Slice") for i in range(1, len(n.input))]
        choices += [(n, 1) for n in self._nodes("Pad") if len(n.input) > 1]
        choices += [(n, 1) for n in self._nodes("Expand")]
        choices += [(n, 1) for n in self._nodes("Reshape")]
        if not choices:
            return False
        node, index = self.rng.choice(choices)
        tensor = self._producer_const(node.input[index])
        if tensor is None or tensor.data_type not in (INT64, TensorProto.INT32):
            return False
        values = numpy_helper.to_array(tensor).copy()
        if values.size == 0:
            return False
        i = self.rng.randrange(values.size)
        values.flat[i] = self.rng.choice(
            [0, 1, -1, 2, -2, 32, 2**63 - 1, int(values.flat[i]) + self.rng.choice([-1, 1])]
        )
        node.input[index] = self._const_node(values.astype(values.dtype))
        return True

    def small_constant(self) -> bool:
        """One element of a small integer Constant, nudged (a shape, an axis, a total length)."""
        tensors = [
            a.t
            for n in self._nodes("Constant")
            for a in n.attribute
            if a.name == "value" and a.t.data_type == INT64 and 0 < int(np.prod(a.t.dims or [1])) <= 8
        ]
        if not tensors:
            return False
        tensor = self.rng.choice(tensors)
        values = numpy_helper.to_array(tensor).copy()
        i = self.rng.randrange(values.size)
        values.flat[i] = self.rng.choice([0, 1, -1, 2, 32, 50, 400, int(values.flat[i]) + self.rng.choice([-1, 1])])
        tensor.CopyFrom(numpy_helper.from_array(values, tensor.name))
        return True

    def opset(self) -> bool:
        """Another opset of the same form (Slice, Unsqueeze and Squeeze take inputs from 13)."""
        op = next((o for o in self.m.opset_import if o.domain in ("", "ai.onnx")), None)
        if op is None:
            return False
        op.version = self.rng.choice([11, 12] if op.version < 13 else [13, 14, 15, 16, 17, 18, 19, 20])
        return True

    def wrap_in_if(self) -> bool:
        """A node moved into both branches of an If on a constant condition."""
        candidates = [n for n in self.g.node if n.op_type not in ("Constant", "If") and n.output and all(n.output)]
        if not candidates:
            return False
        node = self.rng.choice(candidates)
        branches = []
        for side in ("then", "else"):
            inner = onnx.NodeProto()
            inner.CopyFrom(node)
            inner.name = self._name(f"{node.name}_{side}")
            inner.output[:] = [self._name(f"{o}_{side}") for o in node.output]
            outputs = [
                helper.make_tensor_value_info(o, self.types.get(src, (0, None))[0], None)
                for o, src in zip(inner.output, node.output)
            ]
            branches.append(helper.make_graph([inner], self._name(side), [], outputs))
        flag = self._const_node(np.array(self.rng.random() < 0.5))
        wrapper = helper.make_node(
            "If", [flag], list(node.output), name=self._name("if"), then_branch=branches[0], else_branch=branches[1]
        )
        node.CopyFrom(wrapper)
        self._topo()
        return True

    def mask_dtype(self) -> bool:
        """A mask input of another dtype (int64, float, uint8), cast to what the graph used."""
        inputs = [
            i
            for i in self.g.input
            if i.type.tensor_type.elem_type in (BOOL, INT64) and len(i.type.tensor_type.shape.dim) == 2
        ]
        if not inputs:
            return False
        info = self.rng.choice(inputs)
        old = info.type.tensor_type.elem_type
        info.type.tensor_type.elem_type = self.rng.choice(
            [t for t in (BOOL, INT64, FLOAT, TensorProto.UINT8, TensorProto.INT32) if t != old]
        )
        inner = self._name(info.name)
        cast = helper.make_node("Cast", [info.name], [inner], to=old)
        self._rewire(info.name, inner, cast)
        self.g.node.insert(0, cast)
        return True

    def extra_io(self) -> bool:
        r = self.rng.random()
        if r < 0.35:  # an unused input
            dims = self.rng.choice([["batch", "samples"], ["batch"], [], [1, 4]])
            self.g.input.append(
                helper.make_tensor_value_info(self._name("extra"), self.rng.choice([FLOAT, BOOL, INT64]), dims)
            )
        elif r < 0.75:  # an intermediate tensor as another output
            named = [
                n
                for n, (e, d) in self.types.items()
                if e
                and d is not None
                and n not in {o.name for o in self.g.output}
                and n not in {i.name for i in self.g.input}
                and n not in {t.name for t in self.g.initializer}
            ]
            if not named:
                return False
            name = self.rng.choice(named)
            self.g.output.append(helper.make_tensor_value_info(name, self.types[name][0], None))
        elif len(self.g.output) > 1:
            del self.g.output[self.rng.randrange(len(self.g.output))]
        elif len(self.g.input) > 1:  # inputs in another order
            first = onnx.ValueInfoProto()
            first.CopyFrom(self.g.input[0])
            del self.g.input[0]
            self.g.input.append(first)
        else:
            return False
        return True

    def rewire_input(self) -> bool:
        """One node input replaced by another tensor of the same dtype and rank."""
        node = self.rng.choice(self.g.node) if self.g.node else None
        if node is None or not node.input:
            return False
        index = self.rng.randrange(len(node.input))
        elem, dims = self.types.get(node.input[index], (0, None))
        if not elem or dims is None:
            return False
        others = [n for n in self._of(elem, len(dims)) if n != node.input[index] and n not in node.output]
        if not others:
            return False
        node.input[index] = self.rng.choice(others)
        self._topo()
        return True

    def value_info(self) -> bool:
        if not self.g.value_info:
            return False
        if self.rng.random() < 0.5:
            del self.g.value_info[:]
        else:
            del self.g.value_info[self.rng.randrange(len(self.g.value_info))]
        return True

    MUTATIONS = [
        "input_dims",
        "input_dims",
        "where_wiring",
        "add_where_defect",
        "window_constants",
        "window_constants",
        "small_constant",
        "small_constant",
        "opset",
        "wrap_in_if",
        "mask_dtype",
        "extra_io",
        "rewire_input",
        "value_info",
    ]

    def _topo(self) -> None:
        """Nodes in an order where each input is made before it is used (checker needs it)."""
        made = {i.name for i in self.g.input} | {t.name for t in self.g.initializer} | {""}
        pending, ordered = list(self.g.node), []
        while pending:
            ready = [n for n in pending if all(i in made for i in _used(n))]
            if not ready:
                raise ValueError("cycle")
            for n in ready:
                made.update(n.output)
            ordered += ready
            pending = [n for n in pending if all(n is not r for r in ready)]
        copies = [onnx.NodeProto() for _ in ordered]
        for copy, n in zip(copies, ordered):
            copy.CopyFrom(n)
        del self.g.node[:]
        self.g.node.extend(copies)


def _used(node: onnx.NodeProto) -> list[str]:
    """The outer names a node reads: its inputs and what its subgraphs take from outside."""
    names = list(node.input)
    for attr in node.attribute:
        for graph in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
            inner = (
                {o for n in graph.node for o in n.output}
                | {i.name for i in graph.input}
                | {t.name for t in graph.initializer}
            )
            names += [i for n in graph.node for i in _used(n) if i not in inner]
    return names


def mutate(model_bytes: bytes, rng: random.Random, attempts: int = 8) -> bytes | None:
    """One to three graph-aware mutations that leave the model loadable, or None."""
    source = onnx.ModelProto()
    try:
        source.ParseFromString(model_bytes)
    except Exception:  # noqa: BLE001 - not a model (a byte-level mutant): nothing to do here
        return None
    for _ in range(attempts):
        model = onnx.ModelProto()
        model.CopyFrom(source)
        mutator = GraphMutator(model, rng)
        changed = False
        for _ in range(rng.choice([1, 1, 2, 3])):
            try:
                changed |= bool(getattr(mutator, rng.choice(GraphMutator.MUTATIONS))())
            except Exception:  # noqa: BLE001 - a mutation that does not apply to this graph
                continue
        if changed and loadable(model):
            return model.SerializeToString()
    return None
