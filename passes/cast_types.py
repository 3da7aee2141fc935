"""cast-types: a Cast whose target type contradicts the type its output is declared to have.

float16 converters rewrite every declared element type to float16 and leave some Cast
nodes as they were: ``onnxconverter_common.float16.convert_float_to_float16(model,
keep_io_types=True)`` on a fairseq export keeps the ``Cast(to=FLOAT)`` of fairseq's
Fp32GroupNorm (``input.float()``) while its output and every consumer are declared
float16. ONNX Runtime then refuses the file ("Type (tensor(float16)) of output arg ... does
not match expected type (tensor(float))").
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx_graphsurgeon.exporters.onnx_exporter import dtype_to_onnx

from hubert_fix.analysis.graph import unique_name
from hubert_fix.passes.contract import Declined, Edit, RewritePass, Scope, node_label

_FLOATS = frozenset(
    {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16, onnx.TensorProto.DOUBLE}
)
#: The route that works where this pass cannot make the types agree.
_ROUTE = "repair the float32 export (hubert-fix repair), then convert it with hubert-fix optimize --fp16"


@dataclass(frozen=True)
class _Candidate:
    """A Cast, the type it computes and the type its output is declared to have."""

    cast: gs.Node
    computed: int
    declared: int


@dataclass(frozen=True)
class _Plan:
    """One Cast to the declared type, inserted after the contradicted Cast."""

    cast: gs.Node
    declared: int
    computed: int
    node_name: str
    output_name: str
    edit: Edit


class CastTypes(RewritePass):
    """Give a Cast's consumers the type they were converted for: ``Cast(to=declared)`` after it.

    Candidate: a ``Cast`` whose ``to`` is a float type other than the float type its
    output is declared to have (``value_info``).

    Why the repair is the one reading of the file: the Cast computes its ``to`` type (the
    node is the computation; a declared type is the converter's claim), and its consumers
    were converted for the declared type, so each gets the declared type of what the Cast
    computed: a second Cast, to the declared type, between them. Where the Cast reads the
    declared type already (float16 -> float32 -> float16), that is exactly the value it
    read; the whole model then computes in float16, which ``validate`` judges at fp16's
    tolerance against the float32 model's outputs.

    Declined, blocking, naming the route that works (repair the float32 export, then
    ``hubert-fix optimize --fp16``): a contradicted Cast that is a graph output (its
    declared type is the model's interface), or whose types are not both floats.

    Before::

        x [float16] -> Cast(to=FLOAT) -> y (declared float16) -> InstanceNormalization(..., float16 scale)

    After::

        x [float16] -> Cast(to=FLOAT) -> y [float] -> Cast(to=FLOAT16) -> y' [float16] -> InstanceNormalization

    Idempotent: the Cast's output then has the type it computes.
    """

    name = "cast-types"

    def match(self, scope: Scope) -> Iterator[_Candidate | None]:
        return (_match(node) for node in scope.graph.nodes if node.op == "Cast")

    def prove(self, candidate: _Candidate, scope: Scope) -> _Candidate | Declined:
        """A float conversion explains the contradiction: both types floats, and not the model's output."""
        c = candidate
        output = c.cast.outputs[0].name in {t.name for t in scope.graph.outputs}
        if output or c.computed not in _FLOATS or c.declared not in _FLOATS:
            why = "the model's output: its declared type is the interface" if output else "not both floats"
            reason = f"to={_type(c.computed)}, output declared {_type(c.declared)} ({why}): no float conversion explains it; {_ROUTE}"
            return Declined(node_label(c.cast), "Cast", reason, blocking=True)
        return c

    def plan(self, candidate: _Candidate, proof: _Candidate, scope: Scope) -> _Plan:
        return _plan(candidate, scope.taken)

    def rewrite(self, plan: _Plan, graph: gs.Graph) -> None:
        out = plan.cast.outputs[0]
        retyped = gs.Variable(plan.output_name, dtype=out.dtype, shape=out.shape)
        for consumer in list(out.outputs):
            for index, tensor in enumerate(consumer.inputs):
                if tensor is out:
                    consumer.inputs[index] = retyped
        out.dtype = onnx.helper.tensor_dtype_to_np_dtype(plan.computed)
        graph.nodes.append(
            gs.Node("Cast", plan.node_name, attrs={"to": plan.declared}, inputs=[out], outputs=[retyped])
        )


def _declared(tensor: gs.Tensor) -> int | None:
    """The element type ``tensor`` is declared to have (None when nothing declares one)."""
    if tensor.dtype is None:
        return None
    try:
        return int(dtype_to_onnx(np.dtype(tensor.dtype)))
    except TypeError:
        return int(dtype_to_onnx(tensor.dtype))


def _match(cast: gs.Node) -> _Candidate | None:
    """A Cast whose ``to`` differs from its output's declared element type."""
    declared = _declared(cast.outputs[0])
    computed = int(cast.attrs.get("to", 0))
    return None if declared is None or declared == computed else _Candidate(cast, computed, declared)


def _plan(c: _Candidate, taken: set[str]) -> _Plan:
    """Name the Cast to the declared type, and report it."""
    name, out = node_label(c.cast), c.cast.outputs[0]
    node_name = unique_name(f"{name}/to_declared", taken)
    edit = Edit(
        node=name,
        op="Cast",
        before=(
            f"Cast computes {_type(c.computed)} but its output is declared {_type(c.declared)}, the type its "
            f"{len(out.outputs)} consumer(s) were converted for (a float16 converter left the Cast's target as it "
            "was); ONNX Runtime refuses the file"
        ),
        after=f"{out.name} is {_type(c.computed)} as computed; its consumers read a {_type(c.declared)} copy",
        action=f"inserted Cast '{node_name}' (to={_type(c.declared)}) after it",
    )
    return _Plan(c.cast, c.declared, c.computed, node_name, unique_name(f"{node_name}_output_0", taken), edit)


def _type(elem: int) -> str:
    return onnx.TensorProto.DataType.Name(elem) if elem in onnx.TensorProto.DataType.values() else str(elem)
