"""node-order: a graph whose nodes are not in topological order is read, then sorted."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx_builders as ob
from conftest import run_main
from onnx import TensorProto, helper

from hubert_fix.onnxio.reading import load_model
from hubert_fix.passes import NodeOrder

PASS = NodeOrder()


def appended_cast(cycle: bool = False) -> onnx.ModelProto:
    """``onnxruntime.transformers.float16``'s layout: the input's Cast written after the node reading it."""
    nodes = [
        helper.make_node("Relu", ["y" if cycle else "half"], ["y"], name="/Relu"),
        helper.make_node("Cast", ["y" if cycle else "x"], ["half"], name="graph_input_cast0", to=TensorProto.FLOAT16),
    ]
    graph = helper.make_graph(
        nodes, "unsorted", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT16, ["batch", 4])],
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_sorted_and_computing_the_same(tmp_path: Path):
    path = tmp_path / "unsorted.onnx"
    onnx.save(appended_cast(), str(path))
    loaded = load_model(path)  # onnx.checker alone refuses it ("topologically sorted")
    fixed, result = ob.run_pass(PASS, loaded.proto)
    assert result.modified and "not in topological order" in result.edits[0].before
    assert [n.op_type for n in fixed.graph.node] == ["Cast", "Relu"]
    onnx.checker.check_model(fixed, full_check=True)
    x = np.array([[-1, 2, -3, 4]], np.float32)
    np.testing.assert_array_equal(ob.session(fixed).run(None, {"x": x})[0], np.maximum(x, 0).astype(np.float16))


def test_a_sorted_graph_is_not_a_candidate():
    fixed, _ = ob.run_pass(PASS, appended_cast())
    _, again = ob.run_pass(PASS, fixed)
    assert not again.edits and not again.modified


def test_check_and_repair_through_the_cli(tmp_path: Path):
    path, out = tmp_path / "unsorted.onnx", tmp_path / "sorted.onnx"
    onnx.save(appended_cast(), str(path))
    assert run_main("check", path)[0] == 1
    assert run_main("repair", path, "-o", out)[0] == 0 and run_main("check", out)[0] == 0


def test_a_cycle_is_still_damage(tmp_path: Path):
    path = tmp_path / "cycle.onnx"
    onnx.save(appended_cast(cycle=True), str(path))
    code, _, err = run_main("check", path)
    assert code == 2 and "not a valid ONNX model" in err and err.count("\n") == 1
