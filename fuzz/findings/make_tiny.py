#!/usr/bin/env python3
"""Build the tiny reproducers in this folder (a few hundred bytes each, no fixture needed).

    .venv/bin/python fuzz/findings/make_tiny.py        # writes fuzz/findings/*.onnx
    .venv/bin/hubert-fix check fuzz/findings/unknown_data_type.onnx   # should be exit 2, one line
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = Path(__file__).resolve().parent


def _model(nodes, inputs, outputs, initializers=(), sparse=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers), sparse_initializer=list(sparse))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def unknown_data_type() -> onnx.ModelProto:
    """An initializer whose data_type is 39 (no such TensorProto.DataType): KeyError: 39 in graphsurgeon."""
    w = numpy_helper.from_array(np.ones([4], np.float32), "w")
    w.data_type = 39
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])
    return _model([helper.make_node("Add", ["x", "w"], ["y"], name="add")], [x], [y], [w])


def sparse_initializer() -> onnx.ModelProto:
    """A sparse_initializer (valid ONNX, onnx.checker accepts it): AttributeError in dims._inference_model."""
    values = numpy_helper.from_array(np.array([2.0], np.float32), "w")
    indices = numpy_helper.from_array(np.array([1], np.int64), "w_idx")
    w = helper.make_sparse_tensor(values, indices, [4])
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])
    return _model([helper.make_node("Add", ["x", "w"], ["y"], name="add")], [x], [y], sparse=[w])


def absurd_constant_of_shape(value: int = 0x0500000000000004) -> onnx.ModelProto:
    """Constant [value] -> ConstantOfShape -> Cast: ONNX data propagation (infer_shapes(data_prop=True))
    tries to materialize a value vector of ``value`` elements: std::bad_alloc under RLIMIT_AS,
    all memory without a limit. Same class as known.absurd_reshape_constant."""
    const = helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(np.array([value], np.int64), "c"))
    fill = helper.make_node("ConstantOfShape", ["c"], ["s"], value=numpy_helper.from_array(np.array([1], np.int64), "v"))
    cast = helper.make_node("Cast", ["s"], ["y"], to=TensorProto.INT64)
    y = helper.make_tensor_value_info("y", TensorProto.INT64, None)
    return _model([const, fill, cast], [], [y])


def invalid_utf8_attribute() -> onnx.ModelProto:
    """A Pad whose STRING attribute ``mode`` is b"\\xff\\xfe": UnicodeDecodeError in graphsurgeon's importer."""
    pads = numpy_helper.from_array(np.array([1, 1], np.int64), "pads")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [6])
    pad = helper.make_node("Pad", ["x", "pads"], ["y"], name="pad", mode="constant")
    pad.attribute[0].s = b"\xff\xfe"
    return _model([pad], [x], [y], [pads])


BUILDERS = {
    "invalid_utf8_attribute": invalid_utf8_attribute,
    "unknown_data_type": unknown_data_type,
    "sparse_initializer": sparse_initializer,
    "absurd_constant_of_shape": absurd_constant_of_shape,
}

if __name__ == "__main__":
    for name, build in BUILDERS.items():
        path = HERE / f"{name}.onnx"
        onnx.save(build(), str(path))
        print(path, path.stat().st_size)
