"""What a model's inputs and outputs are: the waveform, its mask, and what comes out.

``validate`` must feed exports made by anyone's script, not only ours: fairseq's
``(source, padding_mask)`` with a bool mask (True = padding), transformers'
``(input_values, attention_mask)`` with an int64 mask (1 = real sample), adapters with
the waveform alone, outputs that are frame features ``[B, frames, C]`` or pooled heads
``[B, K]``. The roles are found by dtype and rank (``--input NAME=ROLE`` overrides):

* ``audio``: the float input of rank 2 ``[batch, samples]``;
* ``padding_mask``: a bool input, True where a sample is padding (fairseq);
* ``attention_mask``: an integer input, or a bool input whose name says attention
  mask, nonzero where a sample is real (transformers);
* ``lengths``: an integer input of rank 1 ``[batch]``, the number of real samples of
  each utterance (torchaudio's ``Wav2Vec2Model.forward(waveforms, lengths)``).

C, the width at which the matrix puts its frames == C cases, is the width of the data
a ``Where`` masks by frame (the encoder width; a ``final_proj`` export's output is
narrower), else the output's last dim.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from hubert_fix import metadata
from hubert_fix.analysis.convstack import SAMPLE_RATE, ConvStack, frames
from hubert_fix.analysis.dims import GraphFacts, analyze
from hubert_fix.errors import UnusableInputError, argument
from hubert_fix.onnxio.skeleton import weightless

AUDIO = "audio"
PADDING_MASK = "padding_mask"
ATTENTION_MASK = "attention_mask"
LENGTHS = "lengths"
ROLES = (AUDIO, PADDING_MASK, ATTENTION_MASK, LENGTHS)


@dataclass(frozen=True)
class Port:
    """One graph input or output: name, element type, and each dim's size where static."""

    name: str
    dtype: np.dtype
    dims: tuple[int | None, ...] | None  # None: the rank is not declared

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "dtype": str(self.dtype), "dims": None if self.dims is None else list(self.dims)}


@dataclass(frozen=True)
class Interface:
    """The model's inputs by role, its outputs, its conv stack and its width C."""

    audio: Port
    mask: Port | None
    mask_role: str | None  # PADDING_MASK or ATTENTION_MASK
    outputs: tuple[Port, ...]
    stack: ConvStack
    width: int | None  # C for the frames == C cases; None when the graph does not say
    precision: str
    sample_rate: int = SAMPLE_RATE  # what the export recorded (metadata.SAMPLE_RATE); speech is resampled to it
    ctc: bool = False  # the first output is CTC logits [B, frames, V] (a fine-tuned recogniser's export)
    blank: int = 0  # CTC: the blank symbol's index (fairseq's bos, index 0, unless the vocabulary has <ctc_blank>)

    @property
    def batch(self) -> int | None:
        """The static batch of the waveform input (None: dynamic)."""
        return _dim(self.audio, 0)

    @property
    def samples(self) -> int | None:
        """The static length of the waveform input (None: dynamic)."""
        return _dim(self.audio, 1)

    def refusal(self, batch: int, samples: int, padded: bool) -> str | None:
        """Why the interface does not admit such an input (None: it does)."""
        if self.batch is not None and self.batch != batch:
            return f"the model's batch is fixed at {self.batch}"
        if self.samples is not None and self.samples != samples:
            return f"the model's input length is fixed at {self.samples} samples"
        if padded and self.mask is None:
            return "the model has no mask input, so padding cannot be told apart from audio"
        return None

    def feeds(self, source: np.ndarray, padding_mask: np.ndarray) -> dict[str, np.ndarray]:
        """The session's inputs for a waveform batch and its padding mask (True = pad)."""
        feeds = {self.audio.name: source.astype(self.audio.dtype)}
        if self.mask_role == LENGTHS:
            feeds[self.mask.name] = (~padding_mask).sum(axis=1).astype(self.mask.dtype)
        elif self.mask is not None:
            mask = padding_mask if self.mask_role == PADDING_MASK else ~padding_mask
            feeds[self.mask.name] = mask.astype(self.mask.dtype)
        return feeds

    def expected_shape(self, batch: int, samples: int) -> list[int | None] | None:
        """The first output's shape for this input, where the graph says it (None per unknown dim).

        ``[B, frames, D]`` for frame features, ``[B, K]`` for a pooled head; None for any
        other rank (only finiteness is checked then).
        """
        out = self.outputs[0]
        if out.dims is None or len(out.dims) not in (2, 3):
            return None
        if len(out.dims) == 2:
            return [batch, out.dims[1]]
        return [batch, frames(samples, self.stack), out.dims[2]]

    def to_dict(self) -> dict[str, object]:
        return {
            "audio": self.audio.to_dict(),
            "mask": None if self.mask is None else {**self.mask.to_dict(), "role": self.mask_role},
            "outputs": [o.to_dict() for o in self.outputs],
            "conv_stack": [list(pair) for pair in self.stack],
            "width": self.width,
            "precision": self.precision,
            "ctc": self.ctc,
        }


def _dim(port: Port, axis: int) -> int | None:
    return None if port.dims is None or len(port.dims) <= axis else port.dims[axis]


def _port(info: onnx.ValueInfoProto) -> Port:
    ttype = info.type.tensor_type
    dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(ttype.elem_type)) if ttype.elem_type else np.dtype(np.float32)
    dims = None
    if ttype.HasField("shape"):
        dims = tuple(d.dim_value if d.HasField("dim_value") else None for d in ttype.shape.dim)
    return Port(info.name, dtype, dims)


def describe(model: onnx.ModelProto, name: str, roles: dict[str, str] | None = None) -> Interface:
    """Find the model's interface: from the graph, with ``roles`` overriding per input name."""
    roles = dict(roles or {})
    inputs = {info.name: _port(info) for info in model.graph.input}
    initializers = {t.name for t in model.graph.initializer}
    inputs = {k: v for k, v in inputs.items() if k not in initializers}  # old IRs list weights as inputs
    bad = sorted(f"{k}={v}" for k, v in roles.items() if v not in ROLES)
    if bad:
        raise UnusableInputError(f"{argument('roles')}: {', '.join(bad)}: a role is one of {', '.join(ROLES)}")
    unknown = sorted(set(roles) - set(inputs))
    if unknown:
        raise UnusableInputError(
            f"{name}: {argument('roles')} names {', '.join(unknown)}, not an input of the model ({', '.join(inputs)})"
        )
    for port in inputs.values():
        if port.name not in roles:
            guessed = _guess_role(port)
            if guessed and guessed not in roles.values():
                roles[port.name] = guessed
    audio = [inputs[k] for k, role in roles.items() if role == AUDIO]
    masks = [(inputs[k], role) for k, role in roles.items() if role != AUDIO]
    if not audio:
        raise UnusableInputError(
            f"{name}: no float [batch, samples] waveform input found among {', '.join(inputs)}; "
            f"is this a speech encoder? say which input is the audio with {argument('roles')}"
        )
    if len(masks) > 1:
        raise UnusableInputError(
            f"{name}: more than one mask input ({', '.join(p.name for p, _ in masks)}); choose one with {argument('roles')}"
        )
    missing = sorted(set(inputs) - set(roles))
    if missing:
        raise UnusableInputError(
            f"{name}: cannot tell what input {', '.join(missing)} is; say it with {argument('roles')} ({', '.join(ROLES)})"
        )
    mask, mask_role = masks[0] if masks else (None, None)
    meta = metadata.read(model)
    if metadata.CONV_STACK in meta:
        stack = tuple(tuple(pair) for pair in json.loads(meta[metadata.CONV_STACK]))
    else:
        stack = conv_stack_from_graph(model)
    if not stack:
        raise UnusableInputError(f"{name}: cannot find the conv feature extractor (no 1-D Conv layers)")
    outputs = tuple(_port(info) for info in model.graph.output)
    facts = analyze(gs.import_onnx(weightless(model)))
    outputs = tuple(_with_inferred_dims(port, facts) for port in outputs)
    width = int(meta[metadata.EMBED_DIM]) if meta.get(metadata.EMBED_DIM) else _masked_width(facts)
    if width is None and outputs[0].dims is not None and len(outputs[0].dims) == 3:
        width = outputs[0].dims[2]
    # from the graph, not the metadata: a quantizer or float16 converter keeps the export's
    # "fp32" record while the graph computes in int8 or float16
    precision = "fp16" if audio[0].dtype == np.float16 else graph_precision(model)
    ctc = meta.get(metadata.KIND) == "ctc"
    blank = int(meta[metadata.BLANK_INDEX]) if (meta.get(metadata.BLANK_INDEX) or "").isdigit() else 0
    rate = int(meta[metadata.SAMPLE_RATE]) if (meta.get(metadata.SAMPLE_RATE) or "").isdigit() else SAMPLE_RATE
    return Interface(audio[0], mask, mask_role, outputs, stack, width, precision, rate, ctc, blank)


def _guess_role(port: Port) -> str | None:
    if port.dims is not None and len(port.dims) == 1 and port.dtype.kind in "iu":
        return LENGTHS
    if port.dims is not None and len(port.dims) != 2:
        return None
    if port.dtype.kind == "f":
        return AUDIO
    if port.dtype == np.bool_:
        return ATTENTION_MASK if "attention" in port.name.lower() else PADDING_MASK
    if port.dtype.kind in "iu":
        return ATTENTION_MASK
    return None


def _with_inferred_dims(port: Port, facts: GraphFacts) -> Port:
    """The output's dims as declared, static dims that shape inference proves filled in."""
    tensor = facts.graph.tensors().get(port.name)
    shape = None if tensor is None else facts.shape(tensor)
    if shape is None:
        return port
    if port.dims is None or len(port.dims) != len(shape):
        return Port(port.name, port.dtype, tuple(d if isinstance(d, int) else None for d in shape))
    return Port(
        port.name,
        port.dtype,
        tuple(d if d is not None else (s if isinstance(s, int) else None) for d, s in zip(port.dims, shape)),
    )


def _masked_width(facts: GraphFacts) -> int | None:
    """The static last dim of the first rank-3 data that a ``Where`` masks by frame.

    That is a condition of lower rank (unrepaired) or one whose last dim is 1 (repaired,
    or written right): the mask zeroes whole frames of ``[B, T, C]``.
    """
    for node in facts.graph.nodes:
        if node.op != "Where":
            continue
        cond, x, y = node.inputs[:3]
        data = x if (facts.rank(x) or 0) >= (facts.rank(y) or 0) else y
        shape, rc = facts.shape(data), facts.rank(cond)
        if shape is None or len(shape) != 3 or not isinstance(shape[2], int) or shape[2] <= 1 or rc is None:
            continue
        if rc < 3 or facts.is_one(cond, 2):
            return shape[2]
    return None


#: Ops of a quantized graph: ONNX's (QDQ, integer and QLinear ops) and ONNX Runtime's, as
#: ``quantize_dynamic``/``quantize_static`` and its optimizers write them.
QUANTIZED_OPS = frozenset({
    "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger",
    "QLinearConv", "QLinearMatMul", "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "QAttention",
    "QLinearAdd", "QLinearMul", "DynamicQuantizeLSTM", "MatMulNBits",
})  # fmt: skip
#: Convolutions by what they compute: the float op, ONNX Runtime's fused one and the quantized ones
#: (each with Conv's attributes: kernel_shape, strides, pads, dilations, group).
CONV_OPS = frozenset({"Conv", "FusedConv", "ConvInteger", "QLinearConv"})
_REDUCED = {onnx.TensorProto.FLOAT16: "fp16", onnx.TensorProto.BFLOAT16: "bf16"}


def graph_precision(model: onnx.ModelProto) -> str:
    """The precision a model without hubert-fix's metadata computes in, judged from its graph:
    int8 where it has quantized ops; fp16 (bf16) where most float weights are float16
    (bfloat16), as float16 converters leave the inputs float32; else fp32."""
    if any(node.op_type in QUANTIZED_OPS for node in model.graph.node):
        return "int8"
    sizes: dict[int, int] = {}
    for tensor in model.graph.initializer:
        sizes[tensor.data_type] = sizes.get(tensor.data_type, 0) + math.prod(tensor.dims)
    floats = {t: n for t, n in sizes.items() if t in (*_REDUCED, onnx.TensorProto.FLOAT)}
    widest = max(floats, key=floats.get, default=onnx.TensorProto.FLOAT)
    return _REDUCED.get(widest, "fp32")


def conv_stack_from_graph(model: onnx.ModelProto) -> ConvStack:
    """(kernel, stride) of the ungrouped 1-D convolutions without padding, in graph order.

    That is the fairseq conv feature extractor; the positional conv is grouped and
    padded, so it is not counted. Graph order is the exporter's topological order. A
    1-D convolution that ``optimize`` runs as 2-D (kernel [1, k], strides [1, s]) counts
    as the 1-D one it computes, and a quantized or fused one (``CONV_OPS``) as the Conv it
    stands for.
    """
    stack = []
    for node in model.graph.node:
        if node.op_type not in CONV_OPS:
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        kernel = list(attrs.get("kernel_shape", []))
        strides = list(attrs.get("strides", [1] * len(kernel)))
        if len(kernel) == 2 and kernel[0] == 1 and strides[:1] == [1]:  # [1, k] over [B, C, 1, T]
            kernel, strides = kernel[1:], strides[1:]
        if len(kernel) != 1 or attrs.get("group", 1) != 1 or any(attrs.get("pads", [])):
            continue
        if any(d != 1 for d in attrs.get("dilations", [1])):
            continue
        stack.append((int(kernel[0]), int(strides[0])))
    return tuple(stack)
