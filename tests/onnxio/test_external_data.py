"""External-data models, hostile inputs around them, and where OUT may go.

The weights of an external-data model are never loaded: repair copies them file to file
into ``OUT.data``. Every broken variant (missing, empty or short data file, a location
outside the model's folder, a symlink loop, ...) is exit 2 with one line naming the
file, and nothing is written.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import CASES, FIXTURES, RAW, run_main
from onnx import TensorProto, helper

from hubert_fix.onnxio import skeleton
from hubert_fix.onnxio.reading import load_model

EXTERNAL = FIXTURES / "hubert_base_tiny.external"


def _copy_external(tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    shutil.copytree(EXTERNAL, folder)
    return folder / "model.onnx"


def _first_external(model_path: Path) -> Path:
    model = onnx.load(str(model_path), load_external_data=False)
    tensor = next(t for t in model.graph.initializer if t.data_location == TensorProto.EXTERNAL)
    return model_path.parent / next(e.value for e in tensor.external_data if e.key == "location")


def _assert_refused(tmp_path: Path, model: Path, expected: str) -> None:
    out = tmp_path / "out" / "repaired.onnx"
    out.parent.mkdir(exist_ok=True)
    code, _, err = run_main("repair", model, "-o", out)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and str(model) in lines[0] and expected in lines[0], err
    assert list(out.parent.iterdir()) == []


def test_repaired_weights_are_byte_copies_in_out_data(tmp_path: Path) -> None:
    out = tmp_path / "out" / "repaired.onnx"
    out.parent.mkdir()
    assert run_main("repair", EXTERNAL / "model.onnx", "-o", out)[0] == 0
    assert sorted(p.name for p in out.parent.iterdir()) == ["repaired.onnx", "repaired.onnx.data"]
    source = onnx.load(str(EXTERNAL / "model.onnx"))
    repaired = onnx.load(str(out))
    weights = {t.name: onnx.numpy_helper.to_array(t) for t in source.graph.initializer}
    for tensor in repaired.graph.initializer:
        if tensor.name in weights:
            np.testing.assert_array_equal(onnx.numpy_helper.to_array(tensor), weights[tensor.name])
    stored = onnx.load(str(out), load_external_data=False)
    inline = [t for t in stored.graph.initializer if t.data_location != TensorProto.EXTERNAL]
    assert all(len(t.raw_data) <= skeleton.INLINE_LIMIT for t in inline)  # new small tensors stay inline
    assert run_main("validate", out, "--reference", CASES)[0] == 0


def test_single_file_repair_keeps_every_tensor(tmp_path: Path) -> None:
    out = tmp_path / "repaired.onnx"
    assert run_main("repair", RAW, "-o", out)[0] == 0
    source, repaired = onnx.load(str(RAW)), onnx.load(str(out))
    by_name = {t.name: t for t in repaired.graph.initializer}
    assert all(by_name[t.name] == t for t in source.graph.initializer)  # spliced back byte for byte


def test_in_place_needs_the_flag_and_then_replaces(tmp_path: Path) -> None:
    model = _copy_external(tmp_path)
    before = model.read_bytes()
    code, _, err = run_main("repair", model, "-o", model)
    assert code == 2 and "--in-place" in err and model.read_bytes() == before
    (model.parent / "notes.txt").write_text("not the model's")
    assert run_main("repair", model, "-o", model, "--in-place")[0] == 0
    assert run_main("check", model)[0] == 0
    assert run_main("validate", model, "--reference", CASES)[0] == 0
    # The one-file-per-tensor weights now live in model.onnx.data; the files the old model
    # referenced are gone, anything else in the folder is left alone.
    assert sorted(p.name for p in model.parent.iterdir()) == ["model.onnx", "model.onnx.data", "notes.txt"]


def test_in_place_with_another_output_is_refused_and_leaves_the_input_whole(tmp_path: Path) -> None:
    model = _copy_external(tmp_path)
    before = {p.name: p.read_bytes() for p in model.parent.iterdir()}
    out = tmp_path / "elsewhere.onnx"
    assert run_main("repair", model, "-o", out, "--in-place")[0] == 64  # contradictory: which one? (a usage error)
    assert {p.name: p.read_bytes() for p in model.parent.iterdir()} == before and not out.exists()


def test_out_data_may_not_overwrite_the_inputs_weights(tmp_path: Path) -> None:
    model = _copy_external(tmp_path)
    data = _first_external(model)
    before = data.read_bytes()
    taken = model.parent / "taken.onnx"
    (model.parent / "taken.onnx.data").symlink_to(data)  # OUT.data would be the input's weights
    code, _, err = run_main("repair", model, "-o", taken)
    assert code == 2 and "which this command reads" in err
    assert not taken.exists() and data.read_bytes() == before


@pytest.mark.parametrize(
    "damage,expected",
    [
        ("missing", "No such file"),
        ("empty", "needs bytes"),
        ("short", "needs bytes"),
        ("directory", "not a regular file"),
        ("outside", "not a path inside the model's folder"),
        ("loop", "Too many levels of symbolic links"),
    ],
)
def test_broken_external_data_is_one_line(tmp_path: Path, damage: str, expected: str) -> None:
    model = _copy_external(tmp_path)
    data = _first_external(model)
    if damage == "missing":
        data.unlink()
    elif damage == "empty":
        data.write_bytes(b"")
    elif damage == "short":
        data.write_bytes(data.read_bytes()[:-3])
    elif damage == "directory":
        data.unlink()
        data.mkdir()
    elif damage == "loop":
        data.unlink()
        data.symlink_to(data)
    else:
        proto = onnx.load(str(model), load_external_data=False)
        for tensor in proto.graph.initializer:
            for entry in tensor.external_data:
                if entry.key == "location" and entry.value == data.name:
                    entry.value = f"../{data.name}"
        model.write_bytes(proto.SerializeToString())
    _assert_refused(tmp_path, model, expected)


@pytest.mark.parametrize(
    "make,expected",
    [
        (lambda p: p.symlink_to(p), "Too many levels of symbolic links"),
        (lambda p: p.mkdir(), "is a directory"),
        (lambda p: p.write_bytes(b""), "empty file"),
        (lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64)), "not a readable ONNX model"),
        (lambda p: shutil.copy(FIXTURES / "hubert_base_tiny.pt", p), "PyTorch checkpoint"),
    ],
    ids=["symlink loop", "directory", "zero bytes", "wrong magic", "a checkpoint"],
)
def test_hostile_model_paths_are_one_line(tmp_path: Path, make, expected: str) -> None:
    model = tmp_path / "model.onnx"
    make(model)
    _assert_refused(tmp_path, model, expected)


def _over_2gb_model(folder: Path) -> Path:
    """HuBERT's broken Where and a 2.1 GB weight in a sparse data file (no disk used)."""
    size = (2**31 + 2**26) // 4  # float32 elements: 2.06 GiB, over protobuf's 2 GB limit
    weight = TensorProto(name="big", data_type=TensorProto.FLOAT, dims=[size])
    weight.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "big.bin"), ("offset", "0"), ("length", str(size * 4))):
        weight.external_data.add(key=key, value=value)
    with open(folder / "big.bin", "wb") as handle:
        handle.truncate(size * 4)
    nodes = [
        helper.make_node("ReduceSum", ["big"], ["total"], keepdims=0),
        helper.make_node("Add", ["x", "total"], ["x2"]),
        helper.make_node("Where", ["mask", "zero", "x2"], ["y"], name="/encoder/Where"),
    ]
    graph = helper.make_graph(
        nodes,
        "big",
        [
            helper.make_tensor_value_info("mask", TensorProto.BOOL, ["batch", "frames"]),
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "frames", 8]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "frames", 8])],
        [weight, helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])],
    )
    path = folder / "model.onnx"
    path.write_bytes(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8).SerializeToString()
    )
    return path


def test_model_over_2gb_is_repaired_without_loading_its_weights(tmp_path: Path) -> None:
    model = _over_2gb_model(tmp_path)
    loaded = load_model(model)
    assert sum(len(t.raw_data) for t in loaded.proto.graph.initializer) < 1024  # weights left on disk
    out = tmp_path / "out" / "repaired.onnx"
    out.parent.mkdir()
    try:
        code, stdout, err = run_main("repair", model, "-o", out)
        assert code == 0, err
        data = out.with_name("repaired.onnx.data")
        assert data.stat().st_size == (tmp_path / "big.bin").stat().st_size
        repaired = load_model(out)
        [unsqueeze] = [n for n in repaired.proto.graph.node if n.op_type == "Unsqueeze"]
        assert unsqueeze.output[0] in [n for n in repaired.proto.graph.node if n.op_type == "Where"][0].input
        assert run_main("check", out)[0] == 0
    finally:
        shutil.rmtree(out.parent, ignore_errors=True)  # 2 GB of real blocks
        os.unlink(tmp_path / "big.bin")


def test_failed_write_leaves_the_previous_out_and_its_data(tmp_path: Path, monkeypatch) -> None:
    from hubert_fix.onnxio import writing

    out = tmp_path / "out" / "repaired.onnx"
    out.parent.mkdir()
    out.write_bytes(b"previous model")
    out.with_name("repaired.onnx.data").write_bytes(b"previous weights")
    model = load_model(EXTERNAL / "model.onnx")

    def fail(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(writing.os, "fsync", fail)
    with pytest.raises(writing.UnusableInputError, match="No space left"):
        writing.save_model(model, out)
    assert out.read_bytes() == b"previous model"
    assert out.with_name("repaired.onnx.data").read_bytes() == b"previous weights"
    assert sorted(p.name for p in out.parent.iterdir()) == ["repaired.onnx", "repaired.onnx.data"]
