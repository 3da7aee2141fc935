"""Known damaged inputs (from a user report), as functions that write the damaged copy.

Each function reads a fixture (``path_in``, e.g. fixtures/hubert_base_tiny.raw.onnx),
changes one field through the onnx library (not by byte offsets) and writes
``path_out``. Tests can call them to build the reproducers on the fly:

    from fuzz.known import unknown_data_type, absurd_reshape_constant

Expected (the project's rule): ``hubert-fix check OUT`` ends with exit 2 and one line
(UnusableInputError), within seconds and bounded memory.
"""

from __future__ import annotations

import sys
from pathlib import Path

import onnx
from onnx import numpy_helper

#: An enum value no TensorProto.DataType has (onnx 1.17+ knows up to 23-ish).
UNKNOWN_DATA_TYPE = 39
#: The int64 the report put into the Constant: 4 with a stray high byte.
ABSURD_VALUE = 0x0500000000000004
ABSURD_NODE = "/encoder/layers.1/self_attn/Constant_11"


def _load(path_in: str | Path) -> onnx.ModelProto:
    return onnx.load(str(path_in), load_external_data=False)


def _save(model: onnx.ModelProto, path_out: str | Path) -> None:
    onnx.save(model, str(path_out))


def unknown_data_type(
    path_in: str | Path, path_out: str | Path, *, value: int = UNKNOWN_DATA_TYPE, initializer: str | None = None
) -> str:
    """Set an initializer's ``data_type`` to an unknown enum value; returns the tensor's name.

    Default: the first initializer (in hubert_base_tiny.raw.onnx a 640-byte conv weight,
    under skeleton.INLINE_LIMIT, so it stays inline). Seen: ``hubert-fix check`` prints a
    traceback, KeyError: 39 in onnx_graphsurgeon's importer (dtype lookup).

    ``value=0`` (UNDEFINED) on an inline tensor is caught by onnx.checker (exit 2), but on
    a tensor over 1 KiB (a stub, e.g. ``initializer="model.feature_extractor.conv_layers.1.0.weight"``)
    the checker only sees the weightless twin: OnnxGraphSurgeonException "Unsupported type: 0".
    """
    model = _load(path_in)
    tensor = next(t for t in model.graph.initializer if initializer is None or t.name == initializer)
    tensor.data_type = value
    _save(model, path_out)
    return tensor.name


def absurd_reshape_constant(
    path_in: str | Path, path_out: str | Path, *, node: str = ABSURD_NODE, value: int = ABSURD_VALUE
) -> str:
    """Set the int64 value of Constant ``node`` (4 in the fixture) to ``value``; returns the node name.

    In hubert_base_tiny.raw.onnx that Constant feeds ConstantOfShape_1 (the shape of a
    tensor); 0x0500000000000004 makes ONNX shape inference (data_prop) try to allocate
    a tensor of 3.6e17 elements: ``check`` grows until memory runs out (std::bad_alloc
    under an address-space limit).
    """
    model = _load(path_in)
    target = next(n for n in model.graph.node if n.name == node)
    attr = next(a for a in target.attribute if a.name == "value")
    old = numpy_helper.to_array(attr.t)
    new = old.copy()
    new.flat[0] = value
    attr.t.CopyFrom(numpy_helper.from_array(new, attr.t.name))
    _save(model, path_out)
    return target.name


def constant_size_mismatch(
    path_in: str | Path, path_out: str | Path, *, node: str = "/Constant_2", data_type: int = onnx.TensorProto.INT8
) -> str:
    """Retype a Constant's value tensor (int64, 8 raw bytes each) to ``data_type`` (INT8: 1 byte each).

    Default node: ``/Constant_2`` of hubert_base_tiny.raw.onnx, the starts of the Slice
    the frozen-slice pass inspects (in .issue5596.onnx ``/encoder/Constant_1`` also works).

    Found by fuzz_load (hubert_base_tiny.issue5596.onnx; raw.onnx has the same node):
    raw_data length no longer matches dtype x shape. Neither onnx.checker nor
    load_model notices (only stubs' lengths are checked); the frozen-slice pass reads the
    value through dims.const_value -> graphsurgeon LazyValues -> numpy_helper.to_array:
    ValueError: cannot reshape array of size 8 into shape (1,).
    """
    model = _load(path_in)
    target = next(n for n in model.graph.node if n.name == node)
    attr = next(a for a in target.attribute if a.name == "value")
    attr.t.data_type = data_type
    _save(model, path_out)
    return target.name


def typed_values_mismatch(path_in: str | Path, path_out: str | Path) -> str:
    """Store the first scalar int64 Constant's value in ``int64_data`` with one value too many.

    Found by fuzz_load (random engine, seed 60712): a tensor whose typed field holds more
    numbers than its shape has (raw_data's length was checked, the typed fields' was not);
    onnx.checker lets it through and reading the value raised ValueError ("cannot reshape
    array of size 2 into shape ()"): exit 4.
    """
    model = _load(path_in)
    for target in model.graph.node:
        value = next((a.t for a in target.attribute if a.name == "value"), None)
        if target.op_type == "Constant" and value is not None and value.data_type == onnx.TensorProto.INT64:
            if not value.dims:
                break
    number = int(numpy_helper.to_array(value))
    value.ClearField("raw_data")
    value.int64_data.extend([number, number])
    _save(model, path_out)
    return target.name


def gather_index_overflow(
    path_in: str | Path, path_out: str | Path, *, node: str = "/Constant_1", value: int = 0x0000000100000001
) -> str:
    """Set the int64 Constant ``node`` (the index 1 of ``Gather(Shape(x), 1)``) to 2**32 + 1.

    Found by fuzz_load on hubert_base_tiny.issue5596.onnx (also in raw.onnx? see the
    report). Below the "absurd integer" bound, so it reaches the passes: shape
    inference then gives a Transpose input a rank its ``perm`` does not have and
    ``dims._step`` indexes ``perm[axis]`` out of range: IndexError (Transpose branch).
    """
    return absurd_reshape_constant(path_in, path_out, node=node, value=value)


def invalid_utf8_attribute(
    path_in: str | Path, path_out: str | Path, *, node: str | None = None, value: bytes = b"\xff\xfe"
) -> str:
    """Set a STRING attribute (default: the first node that has one, e.g. Pad ``mode``) to bytes that are not UTF-8.

    Found by fuzz_load (``/encoder/Pad`` mode in hubert_base_tiny.issue5596.onnx).
    onnx.checker and load_model's UTF-8 check (names only) pass it; onnx_graphsurgeon's
    importer decodes attribute strings: UnicodeDecodeError.
    """
    model = _load(path_in)
    string = onnx.AttributeProto.STRING
    target = next(
        n for n in model.graph.node if (node is None or n.name == node) and any(a.type == string for a in n.attribute)
    )
    attr = next(a for a in target.attribute if a.type == string)
    attr.s = value
    _save(model, path_out)
    return f"{target.name}.{attr.name}"


def output_rank_past_the_graph(path_in: str | Path, path_out: str | Path, *, dim: int = 32) -> str:
    """Declare one more dim (``dim``) on the first graph output than the graph computes; returns its name.

    Found by fuzz_load (atheris, seed 2701, issue 27's run) on hubert_base_tiny.issue5596.onnx:
    ``logits`` declared ``[.., .., .., 32]`` where the Slice that makes it has rank 3. onnx.checker
    and shape inference keep the declared rank; the provenance walk stops at the Slice's
    rank-3 input with axis 3 (the guard for shapes that contradict each other), and
    ``GraphFacts._label`` then indexed that input's inferred shape at 3: IndexError, from
    frozen-batch's look at the outputs.
    """
    model = _load(path_in)
    output = model.graph.output[0]
    output.type.tensor_type.shape.dim.add(dim_value=dim)
    _save(model, path_out)
    return output.name


#: The fixture each reproducer was made for (fixtures/<name>); all but the last three work on raw.onnx too.
FIXTURE = {
    "unknown_data_type": "hubert_base_tiny.raw.onnx",
    "absurd_reshape_constant": "hubert_base_tiny.raw.onnx",
    "constant_size_mismatch": "hubert_base_tiny.raw.onnx",
    "typed_values_mismatch": "hubert_base_tiny.raw.onnx",
    "gather_index_overflow": "hubert_base_tiny.issue5596.onnx",
    "invalid_utf8_attribute": "hubert_base_tiny.issue5596.onnx",
    "output_rank_past_the_graph": "hubert_base_tiny.issue5596.onnx",
}

if __name__ == "__main__":  # python fuzz/known.py OUTDIR [FIXTURES_DIR]: writes every reproducer
    outdir = Path(sys.argv[1])
    fixtures = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(__file__).resolve().parent.parent / "fixtures"
    outdir.mkdir(parents=True, exist_ok=True)
    for name, fixture in FIXTURE.items():
        print(name, globals()[name](fixtures / fixture, outdir / f"{name}.onnx"))
    print(
        "undefined_data_type_stub",
        unknown_data_type(
            fixtures / FIXTURE["unknown_data_type"],
            outdir / "undefined_data_type_stub.onnx",
            value=0,
            initializer="model.feature_extractor.conv_layers.1.0.weight",
        ),
    )
