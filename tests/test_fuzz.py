"""Damaged input found by fuzzing (fuzz/): each finding is refused with one line, and a
short fuzz run over the fixture corpus finds nothing new."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
from conftest import FIXTURES, RAW, assert_one_clear_line, run_cli

ROOT = FIXTURES.parent
sys.path.insert(0, str(ROOT))
from fuzz import known  # noqa: E402

ISSUE5596 = FIXTURES / "hubert_base_tiny.issue5596.onnx"
TINY = sorted((ROOT / "fuzz" / "findings").glob("*.onnx"))


@pytest.mark.parametrize(
    ("damage", "source", "expected"),
    [
        (known.unknown_data_type, RAW, "element type 39"),
        (known.absurd_reshape_constant, RAW, "larger than any tensor dimension"),
        (known.constant_size_mismatch, RAW, "bytes where its type and shape need"),
        (known.invalid_utf8_attribute, ISSUE5596, "string attribute"),
        (known.typed_values_mismatch, RAW, "holds 2 values where its shape needs 1"),
    ],
    ids=lambda v: getattr(v, "__name__", None) if callable(v) else "",
)
def test_a_damaged_fixture_is_one_line(tmp_path: Path, damage, source: Path, expected: str) -> None:
    path = tmp_path / "damaged.onnx"
    damage(source, path)
    result = run_cli("check", path)
    assert_one_clear_line(result, path)
    assert expected in result.stderr


def test_an_undefined_type_on_an_outside_weight_is_one_line(tmp_path: Path) -> None:
    # Element type 0 on a weight over 1 KiB: onnx.checker only sees it as a graph input.
    path = tmp_path / "damaged.onnx"
    known.unknown_data_type(RAW, path, value=0, initializer="model.feature_extractor.conv_layers.1.0.weight")
    assert_one_clear_line(run_cli("check", path), path)


def test_a_gather_index_past_the_shapes_is_refused_not_crashed(tmp_path: Path) -> None:
    # 2**32 + 1 as a Gather index: shapes and attributes then disagree; the walk stops there.
    path, out = tmp_path / "damaged.onnx", tmp_path / "out.onnx"
    known.gather_index_overflow(ISSUE5596, path)
    result = run_cli("repair", path, "-o", out)
    assert result.returncode in (2, 3) and "Traceback" not in result.stderr and not out.exists()


@pytest.mark.parametrize("path", TINY, ids=lambda p: p.name)
def test_each_tiny_reproducer_is_one_line(path: Path) -> None:
    assert_one_clear_line(run_cli("check", path), path)


def test_a_short_fuzz_run_finds_nothing(tmp_path: Path) -> None:
    """The seeds, then mutants (random engine, fixed seed): about a minute on 2 cores."""
    env = {**os.environ, "FUZZ_FINDINGS": str(tmp_path)}
    command = [sys.executable, str(ROOT / "fuzz" / "fuzz_load.py"), "--engine", "random", "--runs", "40", "--seed", "7"]
    result = subprocess.run(
        [*command, str(ROOT / "fuzz" / "corpus")], capture_output=True, text=True, env=env, timeout=600
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "findings 0" in result.stderr and list(tmp_path.iterdir()) == []
    reached = re.search(r"reached the passes (\d+) \((\d+)%\)", result.stderr.splitlines()[-1])
    assert reached and int(reached.group(2)) >= 50, result.stderr[
        -500:
    ]  # the graph-aware mutator keeps mutants loadable


# ---------------------------------------------------------------- post-processing mutations (issue 27)


def _fuzz_module(name: str):
    """A module of the harness, imported as fuzz_load imports them (by bare name)."""
    import importlib

    if str(ROOT / "fuzz") not in sys.path:
        sys.path.insert(0, str(ROOT / "fuzz"))
    return importlib.import_module(name)


SEED = ROOT / "fuzz" / "corpus" / "hubert_base_tiny.raw.onnx"


@pytest.mark.parametrize("tool", ["ssi", "onnxsim", "onnxsim_static", "ort_basic", "ort_extended", "onnxslim",
                                  "fp16_onnxconverter"])  # fmt: skip
def test_each_deployment_tool_makes_a_changed_model_that_loads(tmp_path: Path, tool: str) -> None:
    from hubert_fix.onnxio.reading import load_model

    post_tools = _fuzz_module("post_tools")
    assert tool in post_tools.TOOLS
    model = SEED.read_bytes()
    out = post_tools.run(tool, model, None)
    assert out is not None and out != model
    (tmp_path / "model.onnx").write_bytes(out)
    load_model(tmp_path / "model.onnx")  # raises UnusableInputError where it does not load


def test_the_post_processing_mutation_is_deterministic_and_counted(tmp_path: Path) -> None:
    import random

    from hubert_fix.onnxio.reading import load_model

    mutation, target = _fuzz_module("mutation"), _fuzz_module("target")
    model = SEED.read_bytes()
    outs = []
    for _ in range(2):
        tried, applied = dict(target.STATS.post_tried), dict(target.STATS.post_applied)
        outs.append(mutation.post_process(model, None, random.Random(5)))
        assert sum(target.STATS.post_applied.values()) == sum(applied.values()) + 1
        assert sum(target.STATS.post_tried.values()) == sum(tried.values()) + 1  # the first tool drawn applied
    assert outs[0] == outs[1] and outs[0] != model
    (tmp_path / "model.onnx").write_bytes(outs[0])
    load_model(tmp_path / "model.onnx")


def test_a_tool_that_fails_or_hangs_does_not_apply(monkeypatch) -> None:
    """ONNX Runtime's symbolic shape inference fails on the dynamo export (a TypeError in the tool);
    a tool that hangs is stopped after FUZZ_POST_TIMEOUT; a model the tool leaves as it is, is no mutant."""
    import time

    post_tools, packing = _fuzz_module("post_tools"), _fuzz_module("packing")
    model, side = packing.unpack((ROOT / "fuzz" / "corpus" / "hubert_base_tiny.dynamo.packed").read_bytes())
    assert post_tools.run("ssi", model, side) is None
    assert post_tools.run("onnxsim", model, side) is not None  # the same input, another tool
    monkeypatch.setattr(post_tools, "TIMEOUT_S", 1)
    monkeypatch.setitem(post_tools.CALLS, "hangs", lambda src, out: time.sleep(60))
    monkeypatch.setitem(post_tools.CALLS, "copies", lambda src, out: out.write_bytes(src.read_bytes()))
    start = time.monotonic()
    assert post_tools.run("hangs", model, side) is None and time.monotonic() - start < 10
    assert post_tools.run("copies", model, side) is None


# ---------------------------------------------------------------- the findings of issue 27's fuzz run


def test_an_output_declared_with_more_dims_than_it_has_is_no_internal_error(tmp_path: Path) -> None:
    """Fuzz finding (atheris, seed 2701): ``logits`` declared with a fourth dim its rank-3 Slice
    does not have. The walk stops at the Slice's input with axis 3 (shapes that contradict each
    other); naming that dim indexed past the input's shape (was: IndexError, exit 4)."""
    path = tmp_path / "damaged.onnx"
    known.output_rank_past_the_graph(ISSUE5596, path)
    result = run_cli("check", path)
    assert result.returncode == 1 and "internal error" not in result.stderr, result.stderr
    assert "[where-broadcast]" in result.stdout  # the defect the export has is still found
    # and the declaration the mutation made is not written back as it was: the graph computes rank 3
    assert "[output-shapes] output logits" in result.stdout and "declared [seq, logits_dim1, 32]" in result.stdout


# ---------------------------------------------------------------- the findings of issue 15's fuzz run


def test_a_shape_slice_past_the_rank_is_no_dim() -> None:
    """``Shape(x, start=3)`` of a rank-3 x is empty and ``Shape(x, 1, 2)`` has one element:
    neither has an element 1 (was: IndexError in scalar_dim, reached from frozen-pad)."""
    import onnx_graphsurgeon as gs
    from onnx import TensorProto, helper
    from onnx_builders import const, model

    from hubert_fix.analysis.dims import analyze

    nodes = [
        helper.make_node("Shape", ["x"], ["tail"], start=3),
        helper.make_node("Gather", ["tail", "zero"], ["past_rank"], axis=0),
        helper.make_node("Shape", ["x"], ["middle"], start=1, end=2),
        helper.make_node("Gather", ["middle", "one"], ["past_end"], axis=0),
        helper.make_node("Gather", ["middle", "zero"], ["time"], axis=0),
    ]
    outputs = [helper.make_tensor_value_info(n, TensorProto.INT64, []) for n in ("past_rank", "past_end", "time")]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "time", 8])
    graph = gs.import_onnx(model(nodes, [x], outputs, 17, [const("zero", 0), const("one", 1)]))
    facts, values = analyze(graph), graph.tensors()
    assert facts.scalar_dim(values["past_rank"]) is None and facts.scalar_dim(values["past_end"]) is None
    assert facts.scalar_dim(values["time"]) == "time"


def _with_function_and_if(model: onnx.ModelProto) -> onnx.ModelProto:
    """A local function (unused) and an If node: what the fuzzer combined."""
    from onnx import TensorProto, helper

    function = helper.make_function(
        "custom", "Twice", ["a"], ["b"], [helper.make_node("Add", ["a", "a"], ["b"])], [helper.make_opsetid("", 17)]
    )
    model.functions.append(function)
    branch = helper.make_graph(
        [helper.make_node("Constant", [], ["one"], value_float=1.0)],
        "branch",
        [],
        [helper.make_tensor_value_info("one", TensorProto.FLOAT, [])],
    )
    model.graph.node.append(
        helper.make_node("Constant", [], ["flag"], value=helper.make_tensor("f", TensorProto.BOOL, [], [True]))
    )
    model.graph.node.append(helper.make_node("If", ["flag"], ["chosen"], then_branch=branch, else_branch=branch))
    model.graph.output.append(helper.make_tensor_value_info("chosen", TensorProto.FLOAT, []))
    model.opset_import.append(helper.make_opsetid("custom", 1))
    return model


def test_a_repair_of_a_model_with_functions_and_subgraphs_finishes(tmp_path: Path) -> None:
    """onnx-graphsurgeon 0.6's full toposort recurses without end on such a model (was:
    RecursionError after the first pass that edits); the passes sort nodes only."""
    path, out = tmp_path / "model.onnx", tmp_path / "out.onnx"
    onnx.save(_with_function_and_if(onnx.load(str(RAW))), str(path))
    result = run_cli("repair", path, "-o", out)
    assert result.returncode == 0, result.stderr
    repaired = onnx.load(str(out))
    assert [f.name for f in repaired.functions] == ["Twice"] and any(n.op_type == "If" for n in repaired.graph.node)


def test_a_symbolic_dim_that_is_not_utf8_is_one_line(tmp_path: Path) -> None:
    """Was: ValueError from onnx.helper when the repaired graph was written back."""
    model = onnx.load(str(RAW))
    model.graph.input[0].type.tensor_type.shape.dim[1].dim_param = "QQQQQQQQ"
    path = tmp_path / "damaged.onnx"
    path.write_bytes(model.SerializeToString().replace(b"QQQQQQQQ", b"\x87QQQQQQQ"))
    result = run_cli("check", path)
    assert_one_clear_line(result, path)
    assert "symbolic dim" in result.stderr


def test_a_small_constant_in_external_data_is_not_read_from_the_working_directory(tmp_path: Path, monkeypatch) -> None:
    """Shape constants kept in ``weights.bin``: onnx resolves such a location against the
    working directory, so their values are never read (was: ValidationError "not regular
    file", or the bytes of another file named weights.bin)."""
    import shutil

    from onnx import TensorProto

    import hubert_fix

    folder = tmp_path / "model"
    shutil.copytree(FIXTURES / "hubert_base_tiny.dynamo", folder)
    model = onnx.load(str(folder / "model.onnx"), load_external_data=False)
    blob = bytearray()
    for small in [t for t in model.graph.initializer if t.data_type == TensorProto.INT64 and t.raw_data]:
        entries = {"location": "weights.bin", "offset": str(len(blob)), "length": str(len(small.raw_data))}
        blob += small.raw_data
        small.data_location = TensorProto.EXTERNAL
        small.ClearField("raw_data")
        for key, value in entries.items():
            small.external_data.add(key=key, value=value)
    assert blob
    (folder / "weights.bin").write_bytes(bytes(blob))
    onnx.save(model, str(folder / "model.onnx"))
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    first = hubert_fix.check(folder / "model.onnx").to_dict()
    (elsewhere / "weights.bin").write_bytes(b"\xff" * len(blob))  # another file of that name, here
    assert hubert_fix.check(folder / "model.onnx").to_dict() == first


def test_an_initializer_defined_twice_is_one_line(tmp_path: Path) -> None:
    """Was: accepted, and repair then wrote a file whose graph length was short by one weight."""
    model = onnx.load(str(RAW))
    big = next(t for t in model.graph.initializer if len(t.raw_data) > 1024)
    model.graph.initializer.append(big)
    path = tmp_path / "damaged.onnx"
    onnx.save(model, str(path))
    result = run_cli("check", path)
    assert_one_clear_line(result, path)
    assert "defined twice" in result.stderr


def test_the_written_graph_length_counts_every_weight_it_copies(tmp_path: Path) -> None:
    from hubert_fix.onnxio.reading import load_model
    from hubert_fix.onnxio.writing import save_model

    loaded = load_model(RAW)
    stub = next(t for t in loaded.proto.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL)
    loaded.proto.graph.initializer.append(stub)  # the same weight twice, as a damaged input had it
    save_model(loaded, tmp_path / "out.onnx")
    written = onnx.load(str(tmp_path / "out.onnx"))  # was: DecodeError (wire format corrupt)
    assert [t.name for t in written.graph.initializer].count(stub.name) == 2


def test_a_model_whose_outputs_no_node_computes_is_unusable(tmp_path: Path) -> None:
    """Fuzz finding (seed 1796411414): outputs that are weights, every node dead. repair's cleanup
    removed all nodes and wrote an empty graph, which load_model then refused: refused at load now."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((2, 2), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["unused"])],
        "dead",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "samples"])],
        [helper.make_tensor_value_info("w", TensorProto.FLOAT, [2, 2])],
        [weight],
    )
    model = tmp_path / "dead.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), model)
    onnx.checker.check_model(str(model))  # a valid ONNX model: our loader refuses it, not onnx
    for args in (("check", model), ("repair", model, "-o", tmp_path / "out.onnx")):
        result = run_cli(*args)
        assert_one_clear_line(result, model)
        assert "computes nothing" in result.stderr
    assert not (tmp_path / "out.onnx").exists()
