"""Load a fairseq checkpoint and export ``extract_features`` to ONNX as-is.

The export is deliberately *raw*: fairseq's ``extract_features(source, padding_mask,
mask=False, output_layer=N)`` is traced with the TorchScript exporter (``dynamo=False``)
exactly as it is, bugs included, because the repair passes exist to fix what that
exporter records (HuBERT's trace-frozen ``[:, :-extra]`` slice in
``forward_padding_mask`` and the misaligned ``Where`` from ``x[padding_mask] = 0``).

One thing is shimmed while tracing, and only that: ``pad_to_multiple`` (imported into
``fairseq.models.wav2vec.wav2vec2``) calls ``.is_integer()`` on the frame count, which
is a traced tensor and cannot be traced. The encoder pads T to a multiple of
``required_seq_len_multiple`` purely for efficiency: padded keys are masked (-inf) in
attention and the padded rows are cut off again by ``x[:, :-pad_length]``, so the
features of the real frames do not depend on it (``tests/exporter/test_export.py`` checks this
for odd and even frame counts). Keeping the padding would record a second trace-frozen
slice, so the shim returns ``(x, 0)``. The original function is restored afterwards,
also on error.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import onnx
import torch

try:  # the module (torch.nn.utils.weight_norm is the function); deprecated, may go away
    from torch.nn.utils.weight_norm import WeightNorm
except ImportError:  # pragma: no cover - newer torch: fairseq then cannot use it either
    WeightNorm = None

from hubert_fix import metadata
from hubert_fix.analysis.convstack import SAMPLE_RATE, ConvStack, frames
from hubert_fix.errors import HubertFixError, UnusableInputError, argument, one_line
from hubert_fix.exporter.loading import fairseq_wav2vec2  # imports fairseq quietly
from hubert_fix.exporter.modules import (
    check_final_proj,
    check_output_layer,
    conv_stack,
    copy_model,
    embed_dim,
    exported_module,
    is_ctc,
    on_device,
)
from hubert_fix.onnxio.reading import ModelFile, load_model

log = logging.getLogger(__name__)


INPUT_NAMES = ("source", "padding_mask")
OUTPUT_NAME = "features"
# A CTC fine-tune's outputs: emissions batch-major, and which frames are padding.
CTC_OUTPUT_NAMES = ("logits", "frame_padding_mask")
DYNAMIC_AXES = {
    "source": {0: "batch", 1: "samples"},
    "padding_mask": {0: "batch", 1: "samples"},
    "features": {0: "batch", 1: "frames"},
}


MIN_OPSET = 11  # below, the exporter cannot record the encoder's dynamic Slice inputs and index_put
MAX_OPSET = 20  # torch.onnx._constants.ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET


# ---------------------------------------------------------------- export


@contextlib.contextmanager
def _no_seq_len_padding() -> Iterator[None]:
    """Replace ``pad_to_multiple`` in wav2vec2's encoder by a no-op while tracing.

    Why this is safe is in the module docstring; restored even when the export fails.
    """
    original = fairseq_wav2vec2.pad_to_multiple

    def no_padding(x: Any, multiple: int, dim: int = -1, value: float = 0) -> tuple[Any, int]:
        return x, 0

    fairseq_wav2vec2.pad_to_multiple = no_padding
    try:
        yield
    finally:
        fairseq_wav2vec2.pad_to_multiple = original


@contextlib.contextmanager
def _stdout_silenced() -> Iterator[None]:
    """Send file descriptor 1 to /dev/null while exporting.

    On an error the TorchScript exporter's C++ log prints the whole Torch IR graph
    (tens of KB) to fd 1, where our reports go; ``contextlib.redirect_stdout`` cannot
    catch a C++ write, so the descriptor itself is redirected, and restored afterwards.
    """
    sys.stdout.flush()
    saved, devnull = os.dup(1), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


def _trace_example(
    stack: ConvStack, channels: int, *, dtype: torch.dtype, device: str, static: tuple[int, int] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """A padded batch of 2 that takes every data-dependent branch the export must record.

    ``samples % frames != 0`` so HuBERT's ``[:, :-extra]`` slice is traced, ``frames > 1``
    and ``frames != C`` so no dim is confused with another, and the last item padded so
    the padding path (``x[padding_mask] = 0``) is recorded. ``static`` fixes the shape
    [batch, samples] instead (its last item is padded all the same).
    """
    batch, samples = static or (2, SAMPLE_RATE)
    while static is None:
        n = frames(samples, stack)
        if n > 1 and n != channels and samples % n != 0:
            break
        samples += 1
    generator = torch.Generator().manual_seed(0)
    source = torch.randn(batch, samples, generator=generator) * 0.1
    padding_mask = torch.zeros(batch, samples, dtype=torch.bool)
    padded_from = (samples * 11) // 16
    source[-1, padded_from:] = 0
    padding_mask[-1, padded_from:] = True
    return source.to(device=device, dtype=dtype), padding_mask.to(device)


def export_model(
    model: torch.nn.Module,
    path: Path,
    *,
    opset: int = 17,
    output_layer: int | None = None,
    fp16: bool = False,
    device: str = "cpu",
    static: tuple[int, int] | None = None,
    final_proj: bool = False,
) -> ModelFile:
    """Trace ``extract_features`` with the TorchScript exporter to ``path``: the unrepaired graph.

    Inputs ``source`` [batch, samples] (float, float16 with ``fp16``) and ``padding_mask``
    [batch, samples] bool; output ``features`` [batch, frames, C]. The facts the
    validator needs (conv stack, C, layer, precision) go into ``metadata_props``.
    ``static`` = (batch, samples) exports with that fixed input shape (no dynamic axes);
    ``final_proj`` adds the model's ``final_proj`` after the features (output width changes).

    Returns the file's skeleton (``reading.load_model``): torch writes a model over 2 GB
    with external data beside ``path``, and its weights are never loaded here.
    """
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise HubertFixError(
            f"{argument('opset', opset)}: the TorchScript exporter supports opsets {MIN_OPSET}..{MAX_OPSET}"
        )
    check_output_layer(model, output_layer)
    check_final_proj(model, final_proj)
    stack, channels = conv_stack(model), embed_dim(model)
    traced = on_device(model, fp16=fp16, device=device)
    if opset < 14 and hasattr(traced, "prepare_for_onnx_export_"):
        # Older opsets need fairseq's ONNX-trace code paths (MultiheadAttention.onnx_trace);
        # a copy, because the flag stays set on every module it touches.
        traced = copy_model(traced)
        traced.prepare_for_onnx_export_()
    dtype = torch.float16 if fp16 else torch.float32
    example = _trace_example(stack, channels, dtype=dtype, device=device, static=static)
    ctc = is_ctc(model)
    module = exported_module(model, traced, output_layer, final_proj)
    with _no_seq_len_padding(), torch.no_grad(), warnings.catch_warnings(record=True) as caught, _stdout_silenced():
        warnings.simplefilter("always")
        try:
            torch.onnx.export(
                module.eval(),
                example,
                str(path),
                dynamo=False,
                opset_version=opset,
                input_names=list(INPUT_NAMES),
                output_names=list(CTC_OUTPUT_NAMES) if ctc else [OUTPUT_NAME],
                dynamic_axes=None if static else _dynamic_axes(ctc),
            )
        except Exception as exc:  # the exporter raises assorted types on what it cannot record
            raise UnusableInputError(
                f"{type(model).__name__}: torch.onnx.export failed at opset {opset}: {one_line(exc, 200)}"
            ) from None
    _log_warnings(caught)
    exported = load_model(path)
    if not any(INPUT_NAMES[1] in node.input for node in exported.proto.graph.node):
        raise HubertFixError(
            f"{type(model).__name__}: the traced export does not use padding_mask; "
            "padded batches would be wrong (is this a fairseq speech encoder?)"
        )
    _record_facts(exported.proto, model, stack, channels, output_layer, fp16, final_proj)
    return exported


def _dynamic_axes(ctc: bool) -> dict[str, dict[int, str]]:
    if not ctc:
        return DYNAMIC_AXES
    inputs = {name: DYNAMIC_AXES[name] for name in INPUT_NAMES}
    return {**inputs, **{name: {0: "batch", 1: "frames"} for name in CTC_OUTPUT_NAMES}}


def export_raw(model: torch.nn.Module, **options: Any) -> onnx.ModelProto:
    """``export_model`` into memory, for models under 2 GB (tests, fixtures, the demo)."""
    with tempfile.TemporaryDirectory(prefix="hubert-fix-export-") as tmp:
        exported = export_model(model, Path(tmp) / "raw.onnx", **options)
        full = onnx.load(str(exported.source))
    metadata.set_metadata(full, metadata.read(exported.proto))
    return full


def _log_warnings(caught: list[warnings.WarningMessage]) -> None:
    """TracerWarnings are expected (the frozen branches are the point); one debug line."""
    tracer = [w for w in caught if issubclass(w.category, torch.jit.TracerWarning)]
    if tracer:
        log.debug("export: %d TracerWarning(s) (expected: data-dependent branches are frozen)", len(tracer))
    for w in caught:
        if not issubclass(w.category, torch.jit.TracerWarning):
            log.debug("export: %s: %s", w.category.__name__, one_line(w.message, 200))


def _record_facts(
    proto: onnx.ModelProto,
    model: torch.nn.Module,
    stack: ConvStack,
    channels: int,
    output_layer: int | None,
    fp16: bool,
    final_proj: bool,
) -> None:
    meta = {
        metadata.CONV_STACK: json.dumps([list(pair) for pair in stack]),
        metadata.EMBED_DIM: str(channels),
        metadata.OUTPUT_DIM: str(model.final_proj.out_features if final_proj else channels),
        metadata.FINAL_PROJ: "1" if final_proj else "",
        metadata.OUTPUT_LAYER: "" if output_layer is None else str(output_layer),
        metadata.PRECISION: "fp16" if fp16 else "fp32",
        metadata.MODEL: type(model).__name__,
        metadata.EXPORTER: f"torch.onnx TorchScript, torch {torch.__version__}",
        metadata.SAMPLE_RATE: str(getattr(model, "_hubert_fix_sample_rate", SAMPLE_RATE)),
    }
    if is_ctc(model):
        symbols, blank, pad = model._hubert_fix_ctc
        meta.update({
            metadata.OUTPUT_DIM: str(len(symbols)),
            metadata.KIND: "ctc",
            metadata.VOCABULARY: json.dumps(symbols, ensure_ascii=False),
            metadata.BLANK_INDEX: str(blank),
            metadata.PAD_INDEX: str(pad),
            metadata.LOGITS: (
                "logits [batch, frames, vocab]: fairseq's get_logits (time-major [frames, batch, vocab]) transposed; "
                "frame_padding_mask [batch, frames]: True where a frame is padding (drop those frames before decoding)"
            ),
        })  # fmt: skip
    metadata.set_metadata(proto, meta)
