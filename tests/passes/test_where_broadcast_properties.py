"""Property tests of where-broadcast over random ranks, shapes, dim kinds and opsets.

* A condition laid out left-aligned on the data (PyTorch's ``x[mask] = 0``): after the
  pass, ONNX Runtime computes exactly numpy's masked assignment, or the pass declined
  because the graph cannot tell the two alignments apart (then it changed nothing).
* A condition that already broadcasts right-aligned (correct as ONNX reads it): the
  pass never changes the graph.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_builders as ob
import onnx_graphsurgeon as gs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hubert_fix import metadata, runner
from hubert_fix.analysis.dims import analyze
from hubert_fix.passes import WhereBroadcast

PASS = WhereBroadcast()
SYMBOLS = ("batch", "frames", "chan", "extra")


@st.composite
def layouts(draw: st.DrawFn) -> tuple[list[object], list[int], int]:
    """Data dims (static ints or symbols), the concrete size of each, and an opset."""
    rank = draw(st.integers(2, 4))
    declared: list[object] = []
    sizes: list[int] = []
    for _ in range(rank):
        if draw(st.booleans()):
            size = draw(st.integers(1, 5))
            declared.append(size)
        else:
            symbol = draw(st.sampled_from(SYMBOLS))
            declared.append(symbol)
            size = dict(zip(declared, sizes)).get(symbol) or draw(st.integers(1, 5))
        sizes.append(size)
    return declared, sizes, draw(st.sampled_from([11, 13, 17]))


def _graph_bytes(model) -> bytes:
    return gs.export_onnx(gs.import_onnx(model)).graph.SerializeToString()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layouts(), st.data())
def test_left_aligned_condition_is_repaired_to_numpy_semantics(layout, data) -> None:
    declared, sizes, opset = layout
    cond_rank = data.draw(st.integers(1, len(declared) - 1))
    model = ob.where_model(declared[:cond_rank], declared, opset)
    fixed, result = ob.run_pass(PASS, model)
    if not result.modified:
        [declined] = result.declined
        assert declined.blocking and "ambiguous" in declined.reason
        assert _graph_bytes(fixed) == _graph_bytes(model)
        return
    rng = np.random.default_rng(len(sizes))
    x = rng.standard_normal(sizes).astype(np.float32)
    mask = rng.random(sizes[:cond_rank]) < 0.5
    y = ob.session(fixed).run(None, {"mask": mask, "x": x})[0]
    np.testing.assert_array_equal(y, ob.masked_zero(x, mask))
    _, again = ob.run_pass(PASS, fixed)
    assert not again.modified and not again.edits


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layouts(), st.data())
def test_right_aligned_condition_is_left_alone(layout, data) -> None:
    declared, _, opset = layout
    cond_rank = data.draw(st.integers(1, len(declared)))
    model = ob.where_model(declared[len(declared) - cond_rank :], declared, opset)
    graph = gs.import_onnx(model)
    result = PASS.run(graph, analyze(graph), apply=True)
    assert not result.modified and not result.edits
    assert _graph_bytes(gs.export_onnx(graph)) == _graph_bytes(model)
    if any(d.blocking for d in result.declined):
        return  # also left-aligned (e.g. all dims equal): repair refuses, tested elsewhere
    original = onnx.ModelProto()
    original.CopyFrom(model)
    repaired, report = runner.repair(model, "model.onnx")
    assert not report.edits and repaired.graph == original.graph
    assert {p.key for p in repaired.metadata_props} - {p.key for p in original.metadata_props} == {metadata.REPAIR}
