"""The torch side of an export: facts of a loaded model, the module the exporter traces
(features or CTC emissions), converted copies per device and precision, and fairseq's
own outputs as the validation reference.
"""

from __future__ import annotations

import copy
import inspect
import weakref

import numpy as np
import torch

try:  # the module (torch.nn.utils.weight_norm is the function); deprecated, may go away
    from torch.nn.utils.weight_norm import WeightNorm
except ImportError:  # pragma: no cover - newer torch: fairseq then cannot use it either
    WeightNorm = None

from hubert_fix.analysis.convstack import ConvStack
from hubert_fix.errors import DeviceUnavailableError, HubertFixError, UnusableInputError, argument

# ---------------------------------------------------------------- model facts


def is_ctc(model: torch.nn.Module) -> bool:
    """A fine-tuned CTC recogniser (loaded by ``load_checkpoint``), not a bare encoder."""
    return getattr(model, "_hubert_fix_ctc", None) is not None


def speech_encoder(model: torch.nn.Module) -> torch.nn.Module:
    """The speech encoder: the model itself, or the one a CTC fine-tune wraps."""
    wrapper = getattr(model, "w2v_encoder", None)
    return wrapper.w2v_model if wrapper is not None and hasattr(wrapper, "w2v_model") else model


def conv_stack(model: torch.nn.Module) -> ConvStack:
    """(kernel, stride) of each conv layer of the feature extractor, input first."""
    convs = [m for m in speech_encoder(model).feature_extractor.modules() if isinstance(m, torch.nn.Conv1d)]
    return tuple((int(c.kernel_size[0]), int(c.stride[0])) for c in convs)


def embed_dim(model: torch.nn.Module) -> int:
    """The encoder width C: channels of every frame the encoder's layers compute."""
    return int(speech_encoder(model).encoder.embedding_dim)


def num_layers(model: torch.nn.Module) -> int:
    return len(speech_encoder(model).encoder.layers)


def check_output_layer(model: torch.nn.Module, output_layer: int | None) -> None:
    if output_layer is not None and is_ctc(model):
        raise UnusableInputError(
            f"{argument('output_layer')}: {type(model).__name__} is a CTC recogniser; it exports its logits"
        )
    layers = num_layers(model)
    if output_layer is not None and not 1 <= output_layer <= layers:
        raise UnusableInputError(
            f"{argument('output_layer', output_layer)}: {type(model).__name__} has transformer layers 1..{layers}"
        )


def _extract(
    model: torch.nn.Module,
    source: torch.Tensor,
    padding_mask: torch.Tensor,
    output_layer: int | None,
    final_proj: bool = False,
) -> torch.Tensor:
    """``extract_features`` for HuBERT (``output_layer``, 1-based, returns a tuple) and
    wav2vec 2.0 (``layer``, 0-based, returns a dict): the features of the real frames.

    ``final_proj`` applies the model's ``final_proj`` after it, as RVC v1 and so-vits-svc
    4.0 do with ContentVec (HuBERT layer 9, then the projection).
    """
    params = inspect.signature(model.extract_features).parameters
    if "output_layer" in params:
        result = model.extract_features(source, padding_mask, mask=False, output_layer=output_layer)
    else:
        layer = None if output_layer is None else output_layer - 1
        result = model.extract_features(source, padding_mask, mask=False, layer=layer)
    features = result["x"] if isinstance(result, dict) else result[0]
    return model.final_proj(features) if final_proj else features


def check_final_proj(model: torch.nn.Module, final_proj: bool) -> None:
    if final_proj and (is_ctc(model) or not isinstance(getattr(model, "final_proj", None), torch.nn.Linear)):
        raise HubertFixError(f"{argument('final_proj', True)}: {type(model).__name__} has no final_proj layer")


class _Emissions(torch.nn.Module):
    """(source, padding_mask) -> (logits [B, frames, V], frame padding mask [B, frames]) of a CTC fine-tune.

    What fairseq's own CTC decoding runs (``model(...)``, then ``get_logits``), with the
    time-major logits [frames, B, V] transposed to batch-major.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, source: torch.Tensor, padding_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        net = self.model(source=source, padding_mask=padding_mask)
        return self.model.get_logits(net).transpose(0, 1), net["padding_mask"]


def exported_module(
    model: torch.nn.Module, runner: torch.nn.Module, output_layer: int | None, final_proj: bool
) -> torch.nn.Module:
    """What ``export_model`` traces and ``reference_features`` runs: ``runner`` (``model`` or
    a converted copy) as a recogniser's emissions, or as the encoder's features."""
    return _Emissions(runner) if is_ctc(model) else _Features(runner, output_layer, final_proj)


class _Features(torch.nn.Module):
    """(source, padding_mask) -> features, the graph the exporter traces."""

    def __init__(self, model: torch.nn.Module, output_layer: int | None, final_proj: bool = False) -> None:
        super().__init__()
        self.model = model
        self.output_layer = output_layer
        self.final_proj = final_proj

    def forward(self, source: torch.Tensor, padding_mask: torch.Tensor) -> torch.Tensor:
        return _extract(self.model, source, padding_mask, self.output_layer, self.final_proj)


# ---------------------------------------------------------------- devices


def _check_device(fp16: bool, device: str) -> None:
    if device not in ("cpu", "cuda"):
        raise DeviceUnavailableError(f"device {device!r}: use 'cpu' or 'cuda'")
    if device == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailableError(
            f"{argument('device', 'cuda')} needs a CUDA GPU, and PyTorch sees none (torch {torch.__version__}); "
            f"use {argument('device', 'cpu')}"
        )


# Converted copies per model, so that repeated reference calls (one per validation case)
# do not convert again, and the caller's fp32 model is never turned to fp16 in place
# (fp32 -> fp16 -> fp32 would lose weight precision for every later use).
_converted: weakref.WeakKeyDictionary[torch.nn.Module, dict[tuple[str, bool], torch.nn.Module]] = (
    weakref.WeakKeyDictionary()
)


def copy_model(model: torch.nn.Module) -> torch.nn.Module:
    """``copy.deepcopy`` that also works on fairseq's weight-normed ``pos_conv``.

    The old ``torch.nn.utils.weight_norm`` keeps the computed weight as a plain attribute;
    after loading it is a non-leaf tensor (computed with grad), which deepcopy refuses.
    The hook recomputes it before every forward, so a detached value is equivalent.
    """
    for module in model.modules():
        for hook in module._forward_pre_hooks.values():
            if WeightNorm is not None and isinstance(hook, WeightNorm):
                setattr(module, hook.name, getattr(module, hook.name).detach())
    return copy.deepcopy(model)


def on_device(model: torch.nn.Module, *, fp16: bool, device: str) -> torch.nn.Module:
    """The model itself for fp32 on cpu, else a cached converted copy."""
    _check_device(fp16, device)
    if not fp16 and device == "cpu":
        return model
    copies = _converted.setdefault(model, {})
    key = (device, fp16)
    if key not in copies:
        converted = copy_model(model).to(device)
        copies[key] = (converted.half() if fp16 else converted).eval()
    return copies[key]


# ---------------------------------------------------------------- reference


def reference_features(
    model: torch.nn.Module,
    source: np.ndarray,
    padding_mask: np.ndarray,
    *,
    output_layer: int | None = None,
    fp16: bool = False,
    device: str = "cpu",
    final_proj: bool = False,
) -> np.ndarray:
    """fairseq's own PyTorch features (no shims) for one batch, as float32 numpy."""
    check_output_layer(model, output_layer)
    check_final_proj(model, final_proj)
    runner = on_device(model, fp16=fp16, device=device)
    dtype = torch.float16 if fp16 else torch.float32
    with torch.no_grad():
        outputs = exported_module(model, runner, output_layer, final_proj)(
            torch.from_numpy(np.ascontiguousarray(source)).to(device=device, dtype=dtype),
            torch.from_numpy(np.ascontiguousarray(padding_mask, dtype=bool)).to(device),
        )
    features = outputs[0] if isinstance(outputs, tuple) else outputs  # a recogniser's logits, not its frame mask
    return features.float().cpu().numpy()
