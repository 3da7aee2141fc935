"""pinned-dims: give back the symbolic dims a shape tool pinned by reading a misaligned Where as broadcasting.

A dim written into a file's inputs, outputs or ``value_info`` is a claim of whatever
wrote it. ONNX Runtime's symbolic shape inference (``SymbolicShapeInference.infer_shapes(
model, auto_merge=True)``, the step ONNX Runtime's TensorRT guide asks for) meets the
misaligned ``Where(mask [B, T], 0, x [B, T, C])``, takes it as valid right-aligned
broadcasting (B with T, T with C) and *merges* the symbols: it writes ``source [C,
samples]``, ``features [C, C, C]`` and C everywhere in ``value_info``. The graph itself
is unchanged, but ONNX Runtime then refuses every real batch (the input now says C), and
repairing the Where alone would leave that interface.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx_graphsurgeon as gs

from hubert_fix.analysis.dims import GraphFacts, analyze
from hubert_fix.analysis.graph import unique_name
from hubert_fix.analysis.shapes import Dim
from hubert_fix.analysis.walk import Root
from hubert_fix.passes.contract import Edit, RewritePass, Scope, node_label

_Port = tuple[str, int]  # (graph input name, axis)


@dataclass(frozen=True)
class _Candidate:
    """A static size v (> 1) that inputs declare and a misaligned Where's data has on an axis the
    right-aligned reading pairs with the condition: the value a merge would have written."""

    value: int
    ports: tuple[_Port, ...]  # every input dim declared v
    where: gs.Node


@dataclass(frozen=True)
class _Proof:
    """The candidate's ports that the Where's leading axes come from, the relaxed copy that proves
    them merged (with its facts), the symbol S they get back, and the dim names in use."""

    candidate: _Candidate
    copy: gs.Graph
    relaxed: GraphFacts
    symbol: str
    dims: set[str]


@dataclass(frozen=True)
class _Plan:
    """The dims to write: per graph input and output, its new shape."""

    shapes: tuple[tuple[gs.Tensor, tuple[Dim, ...]], ...]
    edit: Edit


class PinnedDims(RewritePass):
    """Restore symbolic input dims that a shape tool merged with C through a misaligned Where.

    Candidate: a static size v > 1 declared by graph inputs, equal to a static dim of the
    data of a ``Where`` whose condition has lower rank, on an axis that the right-aligned
    reading pairs with a condition axis (``[B, T]`` vs ``[B, T, C]``: T with C).

    Proof, on a copy of the graph whose inputs declare a symbol S instead of v (declared
    dims that were equal stay equal: one S for every input dim declared v), without the
    file's ``value_info`` and output dims (``dims`` takes no dims from them):

    * the Where is proven *left*-aligned with S among its condition's dims: with S the
      graph carries the dim from the inputs to the Where, so no constant in it fixes v
      (a graph whose shapes were folded into constants, e.g. by ``polygraphy surgeon
      sanitize --fold-constants``, fails here and is left to where-broadcast, which
      refuses it);
    * merging the dims the right-aligned reading pairs (as ``auto_merge`` does) puts S
      in one class with the constant v: exactly the value such a tool writes.

    Then **restored**: those input dims become S again (named ``batch`` on axis 0), each
    output dim is what the copy's analysis proves (static where proven, S where it is
    the input's dim, a fresh symbol where it is computed); like every repaired file, it
    keeps no ``value_info`` shapes (``runner``). where-broadcast then repairs the Where
    on the restored graph. Otherwise nothing is a candidate (a static input
    dim is the model's interface).

    Before::

        source [32, samples], padding_mask [32, samples] -> ... Where(mask [32, 32], 0, x [32, 32, 32])
        features [32, 32, 32]                                       (ORT: refuses batch 1, 2, 3, ...)

    After::

        source [batch, samples], padding_mask [batch, samples] -> ... Where(mask [batch, T], 0, x [batch, T, 32])
        features [batch, frames, 32]                                (where-broadcast then unsqueezes the mask)

    Idempotent: once restored, no input declares v.
    """

    name = "pinned-dims"

    def match(self, scope: Scope) -> list[_Candidate]:
        return _match(scope.graph, scope.facts)

    def prove(self, candidate: _Candidate, scope: Scope) -> _Proof | None:
        return _prove(candidate, scope.graph)

    def plan(self, candidate: _Candidate, proof: _Proof, scope: Scope) -> _Plan:
        return _plan(proof, scope.graph)

    def rewrite(self, plan: _Plan, graph: gs.Graph) -> None:
        for tensor, shape in plan.shapes:
            tensor.shape = list(shape)


def _misaligned(graph: gs.Graph, facts: GraphFacts) -> list[tuple[gs.Node, gs.Tensor, gs.Tensor, int, int]]:
    """Every Where whose condition has a lower rank than its data: (where, cond, data, rc, rd)."""
    found = []
    for where in graph.nodes:
        if where.op != "Where":
            continue
        cond, x, y = where.inputs[:3]
        rc, rx, ry = facts.rank(cond), facts.rank(x), facts.rank(y)
        if rc is None or rx is None or ry is None:
            continue
        data, rd = (x, rx) if rx >= ry else (y, ry)
        if rc < rd:
            found.append((where, cond, data, rc, rd))
    return found


def _match(graph: gs.Graph, facts: GraphFacts) -> list[_Candidate]:
    """Static input sizes equal to a static data dim that a misaligned Where's right-aligned reading pairs."""
    declared: dict[int, list[_Port]] = {}
    for tensor in graph.inputs:
        for axis, dim in enumerate(tensor.shape or ()):
            if isinstance(dim, int) and dim > 1:
                declared.setdefault(dim, []).append((tensor.name, axis))
    candidates: dict[int, _Candidate] = {}
    for where, _, data, rc, rd in _misaligned(graph, facts):
        shape = facts.shape(data) or ()
        for axis in range(rd - rc, rd):
            value = shape[axis] if axis < len(shape) else None
            if isinstance(value, int) and value in declared and value not in candidates:
                candidates[value] = _Candidate(value, tuple(declared[value]), where)
    return list(candidates.values())


def _relaxed(graph: gs.Graph, symbols: dict[_Port, str]) -> tuple[gs.Graph, GraphFacts]:
    """A copy whose inputs declare the given symbols instead of their sizes, and its facts."""
    copy = graph.copy()
    inputs = {t.name: t for t in copy.inputs}
    for (name, axis), symbol in symbols.items():
        shape = list(inputs[name].shape)
        shape[axis] = symbol
        inputs[name].shape = shape
    return copy, analyze(copy)


def _where_in(copy: gs.Graph, facts: GraphFacts, where: gs.Node) -> tuple[gs.Tensor, gs.Tensor, int, int] | None:
    """The copy's twin of ``where``, still misaligned: (cond, data, rc, rd)."""
    match = [m for m in _misaligned(copy, facts) if m[0].name == where.name]
    return match[0][1:] if match else None


def _carried(graph: gs.Graph, candidate: _Candidate) -> tuple[_Port, ...]:
    """The declared ports the Where's leading axes come from: with a symbol of its own for each port
    declared v, those whose symbol is the root of a condition or data axis the two readings pair
    (not, say, the data's own width where an input declares it)."""
    symbols = {port: f"pinned_{i}" for i, port in enumerate(candidate.ports)}
    copy, facts = _relaxed(graph, symbols)
    found = _where_in(copy, facts, candidate.where)
    if found is None:
        return ()
    cond, data, rc, _ = found
    roots = {facts.root(t, i) for i in range(rc) for t in (cond, data)}
    return tuple(port for port, symbol in symbols.items() if symbol in roots)


def _merged_classes(facts: GraphFacts, cond: gs.Tensor, data: gs.Tensor, rc: int, rd: int) -> list[set[Root]]:
    """The classes ``auto_merge`` forms from the right-aligned reading: each condition dim with
    the data dim it is paired with, transitively (by provenance root, or the static size)."""
    classes: list[set[Root]] = []
    for i in range(rc):
        pair = {_key(facts, cond, i), _key(facts, data, rd - rc + i)}
        joined = [c for c in classes if c & pair]
        for c in joined:
            classes.remove(c)
            pair |= c
        classes.append(pair)
    return classes


def _key(facts: GraphFacts, tensor: gs.Tensor, axis: int) -> Root:
    root = facts.root(tensor, axis)
    return root if root is not None else (tensor.name, axis)


def _prove(candidate: _Candidate, graph: gs.Graph) -> _Proof | None:
    """v is a merge when the relaxed copy proves the Where left-aligned on S and a merge of its
    right-aligned pairs ties S to v; None otherwise (the declared size stands, nothing to report)."""
    ports = _carried(graph, candidate)
    if not ports:
        return None
    candidate = _Candidate(candidate.value, ports, candidate.where)
    dims = {d for t in [*graph.inputs, *graph.outputs] for d in (t.shape or ()) if isinstance(d, str)}
    axes = {axis for _, axis in ports}
    symbol = unique_name("batch" if axes == {0} else f"dim{min(axes)}", dims)
    copy, relaxed = _relaxed(graph, dict.fromkeys(ports, symbol))
    found = _where_in(copy, relaxed, candidate.where)
    if found is None:
        return None
    cond, data, rc, rd = found
    left = all(relaxed.same_dim(cond, i, data, i) for i in range(rc))
    has_symbol = any(relaxed.root(cond, i) == symbol for i in range(rc))
    tied = any(symbol in c and candidate.value in c for c in _merged_classes(relaxed, cond, data, rc, rd))
    return _Proof(candidate, copy, relaxed, symbol, dims) if left and has_symbol and tied else None


def _plan(proof: _Proof, graph: gs.Graph) -> _Plan:
    """The restored interface: inputs with S, outputs as the relaxed copy proves them."""
    candidate, copy, relaxed, symbol, taken = proof.candidate, proof.copy, proof.relaxed, proof.symbol, proof.dims
    v = candidate.value
    names: dict[Root, str] = {}
    shapes: list[tuple[gs.Tensor, tuple[Dim, ...]]] = []
    ports = set(candidate.ports)
    for tensor in graph.inputs:
        if tensor.shape is not None and any((tensor.name, a) in ports for a in range(len(tensor.shape))):
            shape = tuple(symbol if (tensor.name, a) in ports else d for a, d in enumerate(tensor.shape))
            shapes.append((tensor, shape))
    copies = copy.tensors()
    for tensor in graph.outputs:
        if tensor.shape is None:
            continue
        twin = copies[tensor.name]
        shape = tuple(
            _output_dim(relaxed, twin, a, d, v, names, taken, tensor.name, len(tensor.shape))
            for a, d in enumerate(tensor.shape)
        )
        if shape != tuple(tensor.shape):
            shapes.append((tensor, shape))
    before = "; ".join(f"{t.name} {_dims(t.shape)}" for t, _ in shapes)
    after = "; ".join(f"{t.name} {_dims(s)}" for t, s in shapes)
    where = node_label(candidate.where)
    inputs = ", ".join(f"{n} axis {a}" for n, a in candidate.ports)
    edit = Edit(
        node=", ".join(dict.fromkeys(n for n, _ in candidate.ports)),
        op="graph inputs",
        before=(
            f"{before}: {inputs} declared {v}, the width that reading Where {where} as right-aligned "
            f"broadcasting merges it with (a shape tool with auto_merge writes this); with the dim symbolic the "
            f"Where is proven left-aligned on it, so nothing in the graph fixes it to {v}"
        ),
        after=after,
        action=f"restored {symbol} in the inputs, the outputs' dims as the graph computes them",
    )
    return _Plan(tuple(shapes), edit)


def _proven(facts: GraphFacts, tensor: gs.Tensor, axis: int) -> Dim | None:
    """The dim's static size where the facts prove one, else None."""
    shape = facts.shape(tensor)
    dim = None if shape is None or axis >= len(shape) else shape[axis]
    return dim if isinstance(dim, int) else None


def _output_dim(
    facts: GraphFacts,
    tensor: gs.Tensor,
    axis: int,
    declared: Dim | None,
    v: int,
    names: dict[Root, str],
    taken: set[str],
    output: str,
    rank: int,
) -> Dim | None:
    """An output dim as the relaxed copy proves it: the declaration where it does not state v
    or v is proven; the restored symbol where the dim is the input's; else a fresh symbol."""
    proven = _proven(facts, tensor, axis)
    if declared != v or proven == v:
        return declared
    if proven is not None:
        return proven
    root = _key(facts, tensor, axis)
    if isinstance(root, str):
        return root  # a symbol the inputs declare (the restored one among them)
    if root not in names:
        names[root] = unique_name("frames" if rank == 3 and axis == 1 else f"{output}_dim{axis}", taken)
    return names[root]


def _dims(shape: object) -> str:
    return "[?]" if shape is None else "[" + ", ".join(str(d) for d in shape) + "]"
