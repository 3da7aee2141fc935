"""The feature extractor's convolutions in int8 for ONNX Runtime's CPU (``optimize --int8``).

ONNX Runtime's integer convolution (ConvInteger) is slower than its float Conv, and one
activation scale per tensor (DynamicQuantizeLinear) loses an utterance's quiet frames
(min frame cosine 0.95 on HuBERT base). So each eligible 1-D Conv becomes its im2col
rows, one uint8 scale and zero point per row (per output frame), and a
``MatMulInteger`` with int8 weights::

    Conv(x [B, C, T], W [Co, C, k], stride s) -> y [B, Co, T']
    =>
    d    = Transpose(x) - z                       z: the conv's input for silent audio
    rows = [Reshape(d[:, :s T'], [-1, s C]), Reshape(d[:, s::s], [-1, C]), ..]   taps 0..s-1, s, .., k-1
    lo, hi per row over all the parts -> scale, zero point (uint8)
    q_i  = QuantizeLinear(rows_i, scale, zp, axis=0)
    y    = Transpose(Reshape((Cast(Sum_i MatMulInteger(q_i, Wq_i)) - zp * colsum(Wq)) * scale * w_scale
                             + W.z + bias, [B, T', Co]))

The row of a frame is its taps side by side; kept as parts with one scale per row, each
multiplied by its rows of the weight (``Wq_i``) and the int32 products added, it gives
the same integers as one MatMulInteger over the concatenated row without copying the
rows into one tensor (measured on base: the Concat was 5% of the int8 model's time).

Subtracting ``z`` (the extractor's constant response to silence, measured by running the
model on zeros) keeps a quiet frame's small deviations from drowning in the channels'
offsets. Weights are int8, symmetric per output channel; activations use 7 of uint8's
bits: on a CPU without VNNI, ONNX Runtime multiplies uint8 by int8 with ``vpmaddubsw``,
whose int16 sums of two products saturate above 32767 (255 x 127 x 2 would; 127 x 127
x 2 does not), so the file computes the same on every x86 CPU. Measured on base: 7-bit
activations cost less accuracy than 7-bit weights (README).

Eligible: a standard 1-D Conv, group 1, no padding or dilation, 2 <= stride <= kernel, a constant
float32 weight with at least ``MIN_CHANNELS`` input channels and a kernel of at least
``MIN_KERNEL``, whose input is constant
over time for silent audio (what the measurement proves). Declined otherwise: the
positional conv (grouped, padded) and the first conv (one input channel) stay float.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from hubert_fix.analysis.convstack import SAMPLE_RATE
from hubert_fix.analysis.interface import Interface
from hubert_fix.deploy.names import Names
from hubert_fix.onnxio.reading import ModelFile
from hubert_fix.onnxio.session import create_session
from hubert_fix.onnxio.weights import Weights, attribute

#: Narrower convolutions stay float (quantizing them saves less than it costs).
MIN_CHANNELS = 256
#: Shorter kernels stay float: base's k = 2 convs (5 and 6) added 2% speed and put the
#: 1-frame input under cosine 0.999 (README).
MIN_KERNEL = 3
#: int8 weights -127..127, activations 0..127 (7 bits: see the module doc).
WEIGHT_LEVELS = 127
ACTIVATION_LEVELS = 127


def eligible(node: onnx.NodeProto, weights: Weights) -> bool:
    """A Conv this module may rewrite (the silence response still to be measured)."""
    if node.op_type != "Conv" or node.domain not in ("", "ai.onnx") or len(node.input) < 2 or weights.opset < 13:
        return False
    weight = weights.proto(node.input[1])
    if weight is None or weight.data_type != onnx.TensorProto.FLOAT or len(weight.dims) != 3:
        return False
    if weight.dims[1] < MIN_CHANNELS or weight.dims[2] < MIN_KERNEL or attribute(node, "group", 1) != 1:
        return False
    if attribute(node, "auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET") or any(attribute(node, "pads", [0])):
        return False
    if list(attribute(node, "dilations", [1])) != [1]:
        return False
    strides = list(attribute(node, "strides", [1]))
    bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
    kernel = weight.dims[2]
    return 2 <= strides[0] <= kernel and (bias is None or weights.proto(bias) is not None)


def conv_int8(weights: Weights, names: Names, silence: dict[str, np.ndarray]) -> list[str]:
    """Rewrite every eligible Conv whose input's silence response ``silence`` holds ([C]); the names rewritten."""
    graph = weights.graph
    rewritten, nodes = [], []
    shared: _Shared | None = None  # made with the first rewrite: a model with none gains nothing
    for node in graph.node:
        z = silence.get(node.input[0]) if eligible(node, weights) else None
        if z is None:
            nodes.append(node)
            continue
        shared = shared or _Shared(weights, names)
        nodes += _rewrite(node, weights, names, shared, z)
        rewritten.append(node.name)
    del graph.node[:]
    graph.node.extend(nodes)
    return rewritten


class _Shared:
    """Constants every rewritten conv reads, made once."""

    def __init__(self, weights: Weights, names: Names) -> None:
        def add(name: str, value: np.ndarray) -> str:
            return weights.add(names(f"hubert_fix_opt/{name}"), value)

        self.one, self.two = add("axis_1", np.array([1], np.int64)), add("index_2", np.array([2], np.int64))
        self.zero = add("index_0", np.array([0], np.int64))
        self.minus_one = add("minus_1", np.array([-1], np.int64))
        self.fzero = add("float_0", np.array(0, np.float32))
        self.levels = add("float_levels", np.array(ACTIVATION_LEVELS, np.float32))
        self.tiny = add("float_tiny", np.array(1e-12, np.float32))
        self.reduce_axes = {} if weights.opset >= 18 else {"axes": [1]}
        self.reduce_inputs = [self.one] if weights.opset >= 18 else []


def _rewrite(
    node: onnx.NodeProto, weights: Weights, names: Names, shared: _Shared, z: np.ndarray
) -> list[onnx.NodeProto]:
    stem = node.name or node.output[0]
    weight = weights.array(node.input[1]).astype(np.float64)  # [Co, C, k]
    out_channels, channels, k = weight.shape
    stride = int(list(attribute(node, "strides", [1]))[0])
    matrix = weight.transpose(2, 1, 0).reshape(k * channels, out_channels)  # row j*C + c holds W[o, c, j]
    scale = np.abs(matrix).max(axis=0) / WEIGHT_LEVELS
    scale[scale == 0] = 1.0
    levels = np.clip(np.rint(matrix / scale), -WEIGHT_LEVELS, WEIGHT_LEVELS).astype(np.int8)
    offset = np.einsum("ocj,c->o", weight, z.astype(np.float64))  # W.z: what silence gives
    bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
    if bias is not None:
        offset = offset + weights.array(bias).astype(np.float64)

    def add(part: str, value: np.ndarray) -> str:
        return weights.add(names(f"{stem}/int8/{part}"), value)

    def n(part: str) -> str:
        return names(f"{stem}/int8/{part}")

    made = []

    def emit(kind: str, inputs: list[str], part: str, **attrs: object) -> str:
        out = n(part)
        made.append(helper.make_node(kind, inputs, [out], name=n(f"{part}_node"), **attrs))
        return out

    s = shared
    frames_last = emit("Transpose", [node.input[0]], "frames_last", perm=[0, 2, 1])
    deviation = emit("Sub", [frames_last, add("silence", z.astype(np.float32))], "deviation")
    shape = emit("Shape", [node.input[0]], "shape")
    length = emit("Gather", [shape, s.two], "length")
    frames = emit(
        "Add", [emit("Div", [emit("Sub", [length, add("k", np.array([k], np.int64))], "minus_k"),
                             add("stride", np.array([stride], np.int64))], "steps"), s.one], "frames",
    )  # fmt: skip
    span = emit("Mul", [frames, add("stride_", np.array([stride], np.int64))], "span")
    # taps 0..stride-1 of every frame are the frame's stride consecutive samples: one contiguous
    # slice, reshaped (no strided copy); the taps past the stride are strided slices
    head = emit("Slice", [deviation, s.zero, span, s.one], "head")
    taps = [emit("Reshape", [head, add("head_shape", np.array([0, -1, stride * channels], np.int64))], "head_taps")]
    for j in range(stride, k):
        end = emit("Add", [span, add(f"end_{j}", np.array([j - stride + 1], np.int64))], f"end_{j}")
        taps.append(
            emit("Slice", [deviation, add(f"start_{j}", np.array([j], np.int64)), end, s.one,
                           add(f"step_{j}", np.array([stride], np.int64))], f"tap_{j}")
        )  # fmt: skip
    # the parts of the rows stay apart (see the module doc): one scale per row, the int32 products added
    widths = [stride * channels] + [channels] * (k - stride)
    parts = [emit("Reshape", [tap, add(f"part_shape_{i}", np.array([-1, width], np.int64))], f"part_{i}")
             for i, (tap, width) in enumerate(zip(taps, widths))]  # fmt: skip
    high, low = s.fzero, s.fzero
    for i, part in enumerate(parts):
        high = emit("Max", [emit("ReduceMax", [part, *s.reduce_inputs], f"part_max_{i}", keepdims=0,
                                 **s.reduce_axes), high], f"high_{i}")  # fmt: skip
        low = emit("Min", [emit("ReduceMin", [part, *s.reduce_inputs], f"part_min_{i}", keepdims=0,
                                **s.reduce_axes), low], f"low_{i}")  # fmt: skip
    row_scale = emit("Max", [emit("Div", [emit("Sub", [high, low], "range"), s.levels], "step"), s.tiny], "row_scale")
    zero_float = emit("Clip", [emit("Round", [emit("Div", [emit("Neg", [low], "minus_low"), row_scale], "zp_real")],
                                    "zp_round"), s.fzero, s.levels], "zp_float")  # fmt: skip
    zero_point = emit("Cast", [zero_float], "zero_point", to=onnx.TensorProto.UINT8)
    product, first = None, 0
    for i, (part, width) in enumerate(zip(parts, widths)):
        quantized = emit("QuantizeLinear", [part, row_scale, zero_point], f"quantized_{i}", axis=0)
        partial = emit("MatMulInteger", [quantized, add(f"weight_{i}", levels[first : first + width])], f"int32_{i}")
        product = partial if product is None else emit("Add", [product, partial], f"int32_sum_{i}")
        first += width
    floats = emit("Cast", [product], "float", to=onnx.TensorProto.FLOAT)
    correction = emit(
        "Mul", [emit("Unsqueeze", [zero_float, s.one], "zp_column"),
                add("column_sums", levels.astype(np.float32).sum(axis=0, keepdims=True))], "correction",
    )  # fmt: skip
    centred = emit("Sub", [floats, correction], "centred")
    scaled = emit("Mul", [centred, emit("Unsqueeze", [row_scale, s.one], "scale_column")], "row_scaled")
    values = emit("Mul", [scaled, add("weight_scale", scale.astype(np.float32))], "values")
    shifted = emit("Add", [values, add("offset", offset.astype(np.float32))], "shifted")
    batch = emit("Gather", [shape, s.zero], "batch")
    out_shape = emit("Concat", [batch, s.minus_one, add("out_channels", np.array([out_channels], np.int64))],
                     "out_shape", axis=0)  # fmt: skip
    batched = emit("Reshape", [shifted, out_shape], "batched")
    made.append(helper.make_node("Transpose", [batched], [node.output[0]], name=n("channels_first"), perm=[0, 2, 1]))
    return made


def measure_silence(model: ModelFile, face: Interface, name: str) -> dict[str, np.ndarray]:
    """The input of each eligible conv for 1 s of silent audio, where it is constant over time ([C]).

    The model runs on ONNX Runtime's CPU with those tensors as extra outputs.
    """
    weights = Weights(model)
    wanted = [node.input[0] for node in weights.graph.node if eligible(node, weights)]
    if not wanted:
        return {}
    probe = onnx.ModelProto()
    probe.CopyFrom(model.proto)
    probe.graph.output.extend(helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None) for t in wanted)
    folder = model.source.parent if model.source is not None else None
    session = create_session(
        probe.SerializeToString(), name, device="cpu", weights_folder=str(folder) if folder else None
    )
    samples = face.samples or SAMPLE_RATE
    source = np.zeros((face.batch or 1, samples), np.float32)
    values = session.run(wanted, face.feeds(source, np.zeros(source.shape, bool)))
    found = {t: _constant_over_time(v[:1]) for t, v in zip(wanted, values)}
    return {t: z for t, z in found.items() if z is not None}


def _constant_over_time(values: np.ndarray) -> np.ndarray | None:
    """A [1, C, T] silence response as its [C] value, or None where it varies over time (declined)."""
    if values.ndim != 3 or values.shape[0] != 1 or values.shape[2] < 1 or not np.isfinite(values).all():
        return None
    first = values[0, :, :1]
    if np.abs(values[0] - first).max() > 1e-5 * max(1.0, float(np.abs(first).max())):
        return None
    return values[0, :, values.shape[2] // 2].astype(np.float32)
