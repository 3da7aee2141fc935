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
features of the real frames do not depend on it (``tests/test_export.py`` checks this
for odd and even frame counts). Keeping the padding would record a second trace-frozen
slice, so the shim returns ``(x, 0)``. The original function is restored afterwards,
also on error.

This module imports torch and fairseq at the top; callers import it lazily
(``hubert_fix.extras.export_module``) so that the repair path never needs them.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import copy
import inspect
import json
import logging
import os
import re
import sys
import tempfile
import typing
import warnings
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import omegaconf
import omegaconf.base
import omegaconf.nodes
import onnx
import torch

try:  # the module (torch.nn.utils.weight_norm is the function); deprecated, may go away
    from torch.nn.utils.weight_norm import WeightNorm
except ImportError:  # pragma: no cover - newer torch: fairseq then cannot use it either
    WeightNorm = None

from hubert_fix.errors import DeviceUnavailableError, HubertFixError, UnusableInputError
from hubert_fix.matrix import ConvStack, frames
from hubert_fix.model_io import ModelFile, load_model, one_line, set_metadata

log = logging.getLogger(__name__)


def _import_fairseq_quietly() -> None:
    """Import fairseq without its import-time side effects on logging.

    ``fairseq.tasks.text_to_speech`` calls ``logging.basicConfig(level=DEBUG)`` when
    imported (and so does every ``import fairseq``): the root logger would then print
    every library's debug lines, and fairseq an INFO line about tensorboardX. The root
    logger's level and handlers are put back as they were.
    """
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    fairseq_logger = logging.getLogger("fairseq")
    fairseq_level = fairseq_logger.level
    fairseq_logger.setLevel(logging.WARNING)
    try:
        import fairseq.data.dictionary  # noqa: F401
        import fairseq.models.hubert.hubert_asr  # noqa: F401  (hubert_ctc)
        import fairseq.models.wav2vec.wav2vec2  # noqa: F401
        import fairseq.models.wav2vec.wav2vec2_asr  # noqa: F401  (wav2vec_ctc)
        import fairseq.tasks.audio_finetuning  # noqa: F401
        from fairseq import checkpoint_utils  # noqa: F401
        try:  # registers model "data2vec_audio" (fairseq ships it under examples/, not models/)
            import fairseq.examples.data2vec.models.data2vec_audio  # noqa: F401
        except ImportError:  # pragma: no cover - a fairseq without examples/
            pass
    finally:
        fairseq_logger.setLevel(fairseq_level)
        root.setLevel(level)
        root.handlers[:] = handlers


_import_fairseq_quietly()
import fairseq.data.dictionary  # noqa: E402  (already imported, now bound here)
import fairseq.models.wav2vec.wav2vec2 as fairseq_wav2vec2  # noqa: E402
from fairseq import checkpoint_utils  # noqa: E402

from hubert_fix import finetuned  # noqa: E402  (imports fairseq's ASR models: after the quiet import)

INPUT_NAMES = ("source", "padding_mask")
OUTPUT_NAME = "features"
# A CTC fine-tune's outputs: emissions batch-major, and which frames are padding.
CTC_OUTPUT_NAMES = ("logits", "frame_padding_mask")
DYNAMIC_AXES = {
    "source": {0: "batch", 1: "samples"},
    "padding_mask": {0: "batch", 1: "samples"},
    "features": {0: "batch", 1: "frames"},
}
DEFAULT_SAMPLE_RATE = 16000
MIN_OPSET = 11  # below, the exporter cannot record the encoder's dynamic Slice inputs and index_put
MAX_OPSET = 20  # torch.onnx._constants.ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET


def _numpy_globals() -> tuple[Any, ...]:
    """numpy arrays and scalars: ``numpy._core`` under numpy 2, ``numpy.core`` under 1.x.

    Files written under numpy 1 name ``numpy.core.multiarray.*``; under numpy 2 those are
    aliases of ``numpy._core.multiarray.*``, allowlisted by name too.
    """
    core = getattr(np, "_core", None) or np.core
    found: list[Any] = [np.ndarray, np.dtype, core.multiarray.scalar, core.multiarray._reconstruct]
    # unpickling a dtype BUILDs an instance of its class (numpy.dtypes.Float64DType, ...)
    found += [type(np.dtype(name)) for name in ("float64", "float32", "float16", "int64", "int32", "bool")]
    if core.__name__ != "numpy.core":
        found += [
            (core.multiarray.scalar, "numpy.core.multiarray.scalar"),
            (core.multiarray._reconstruct, "numpy.core.multiarray._reconstruct"),
        ]
    return tuple(found)


# What fairseq checkpoints pickle besides tensors and plain containers, for torch's
# weights_only unpickler (the default since torch 2.6). Found by saving each checkpoint
# layout fairseq has used and listing torch.serialization.get_unsafe_globals_in_checkpoint:
# - cfg saved as a plain dict (fairseq >= 0.10, HuBERT, wav2vec 2.0): nothing;
# - task_state {"dictionaries": [Dictionary]} (HuBERT pre-training): fairseq Dictionary;
# - args (older wav2vec 2.0 / fairseq < 0.10 checkpoints): argparse.Namespace;
# - cfg saved as an OmegaConf DictConfig (converted checkpoints): DictConfig/ListConfig,
#   their metadata and nodes, typing.Any, dict/list/int as type annotations, defaultdict;
# - numpy scalars and arrays in extra_state (best loss, meters), under numpy 2 names
#   and the numpy 1 names (numpy.core.*) older files carry.
# Structured configs with fairseq's ChoiceEnum cannot be pickled at all, so no enum
# class is needed: fairseq saves cfg with enum_to_str=True.
# None of these run code on load beyond building the object.
SAFE_GLOBALS: tuple[Any, ...] = (
    fairseq.data.dictionary.Dictionary,
    argparse.Namespace,
    omegaconf.DictConfig,
    omegaconf.ListConfig,
    omegaconf.base.ContainerMetadata,
    omegaconf.base.Metadata,
    omegaconf.nodes.AnyNode,
    omegaconf.nodes.StringNode,
    omegaconf.nodes.IntegerNode,
    omegaconf.nodes.FloatNode,
    omegaconf.nodes.BooleanNode,
    typing.Any,
    dict,
    list,
    int,
    float,
    str,
    bool,
    collections.defaultdict,
    collections.OrderedDict,
    *_numpy_globals(),
)

# safe_globals (torch 2.5) with (object, name) aliases (torch 2.6).
_SAFE_LOAD = hasattr(torch.serialization, "safe_globals") and torch.torch_version.TorchVersion(torch.__version__) >= "2.6"
_UNSUPPORTED_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")
_UNBUILDABLE = re.compile(r"Can only build .* but got <class '([\w.\[\]]+)'>")


# ---------------------------------------------------------------- loading


@contextlib.contextmanager
def _quiet_fairseq() -> Iterator[None]:
    """fairseq logs whole configs at INFO while building a task and model; hide that."""
    logger = logging.getLogger("fairseq")
    level = logger.level
    logger.setLevel(max(logging.WARNING, level))
    try:
        yield
    finally:
        logger.setLevel(level)


@contextlib.contextmanager
def _checked_torch_load(path: Path, *, trust: bool) -> Iterator[None]:
    """Make fairseq's own ``torch.load`` call safe (or trusting) and check what it read.

    fairseq's ``load_checkpoint_to_cpu`` calls ``torch.load`` itself and then goes
    straight into ``_upgrade_state_dict``, which fails on a non-fairseq file with an
    unhelpful KeyError. Wrapping ``torch.load`` for the duration of the call lets us
    choose ``weights_only`` (with our allowlist) and reject a file that is not a fairseq
    checkpoint with a message that says so, before fairseq touches it.
    """
    real_load = torch.load

    def load(f: Any, *args: Any, **kwargs: Any) -> Any:
        kwargs["weights_only"] = not trust
        if not trust and not _SAFE_LOAD:
            raise UnusableInputError(
                f"{path}: safe checkpoint loading needs torch >= 2.6 (this is {torch.__version__}); "
                "upgrade torch, or re-run with --trust-checkpoint only if you trust this file"
            )
        try:
            if trust:
                state = real_load(f, *args, **kwargs)
            else:
                with torch.serialization.safe_globals(list(SAFE_GLOBALS)):
                    state = real_load(f, *args, **kwargs)
        except Exception as exc:  # pickle, zip and torch errors: the file is the problem
            raise _load_error(path, exc) from None
        _check_state(path, state)
        return state

    torch.load = load
    try:
        yield
    finally:
        torch.load = real_load


def _check_state(path: Path, state: object) -> None:
    """A fairseq checkpoint is a dict with model weights and a config (cfg or args)."""
    if not isinstance(state, dict):
        raise UnusableInputError(f"{path}: not a fairseq checkpoint (holds a {type(state).__name__}, not a dict)")
    if "model" not in state:
        raise UnusableInputError(f"{path}: not a fairseq checkpoint (no 'model' weights)")
    if state.get("cfg") is None and state.get("args") is None:
        raise UnusableInputError(f"{path}: not a fairseq checkpoint (no 'cfg' or 'args' config)")


# torch.save writes a zip archive (torch >= 1.6) or, in the legacy format, a pickle
# (protocol 2+, so its first byte is the PROTO opcode).
_CHECKPOINT_MAGIC = (b"PK\x03\x04", b"\x80")


def _check_magic(path: Path) -> None:
    """Reject what is not a torch file before unpickling: the safe loader would call a
    text file "unsupported" and suggest trusting it, which would not help."""
    try:
        with path.open("rb") as f:
            head = f.read(4)
    except OSError as exc:
        raise UnusableInputError(f"{path}: cannot read: {one_line(exc.strerror or exc)}") from None
    if not head:
        raise UnusableInputError(f"{path}: not a PyTorch checkpoint (empty file)")
    if not head.startswith(_CHECKPOINT_MAGIC):
        raise UnusableInputError(f"{path}: not a PyTorch checkpoint (neither a torch.save zip archive nor a pickle)")


def _load_error(path: Path, exc: BaseException) -> UnusableInputError:
    """One line for a failed ``torch.load``: an unlisted pickle global, or not a checkpoint."""
    text = str(exc)
    unsupported = _UNSUPPORTED_GLOBAL.search(text) or _UNBUILDABLE.search(text)
    if unsupported:
        return UnusableInputError(
            f"{path}: the checkpoint pickles {unsupported.group(1)}, which the safe loader does not allow; "
            "re-run with --trust-checkpoint only if you trust this file (unpickling can run code)"
        )
    if "Weights only load failed" in text:
        return UnusableInputError(
            f"{path}: the safe loader rejects this checkpoint ({one_line(text.split('Please file')[0], 160)}); "
            "re-run with --trust-checkpoint only if you trust this file (unpickling can run code)"
        )
    return UnusableInputError(f"{path}: not a PyTorch checkpoint: {one_line(exc, 160)}")


def load_checkpoint(
    path: Path, *, trust: bool = False, dict_dir: Path | None = None, vocabulary: list[str] | None = None
) -> torch.nn.Module:
    """Load a fairseq speech-encoder checkpoint with fairseq's own loader, in eval mode.

    Safe by default: the pickle is read with torch's weights_only unpickler and the
    ``SAFE_GLOBALS`` allowlist. ``trust=True`` (``--trust-checkpoint``) unpickles
    without it. Every failure is one UnusableInputError line naming the file. A
    fine-tuned CTC recogniser (``wav2vec_ctc``, ``hubert_ctc``) is loaded through
    ``finetuned.load`` (its shims; ``dict_dir``: the folder of its letter dictionary
    when the checkpoint does not carry it and it is not beside the checkpoint; a
    ``dict_dir`` that is not a folder is refused whether or not it is needed;
    ``vocabulary``: the symbols an exported model recorded, the last resort).
    """
    path = Path(path)
    if not path.exists():
        raise UnusableInputError(f"{path}: no such file")
    if path.is_dir():
        raise UnusableInputError(f"{path}: is a directory, not a checkpoint")
    if dict_dir is not None and not Path(dict_dir).is_dir():  # also where the checkpoint carries its vocabulary
        raise UnusableInputError(f"{dict_dir}: --dict-dir: no such folder")
    _check_magic(path)
    try:
        with _quiet_fairseq(), _checked_torch_load(path, trust=trust), warnings.catch_warnings():
            # fairseq builds pos_conv with the deprecated weight_norm: not the user's concern
            warnings.filterwarnings("ignore", message=r".*torch\.nn\.utils\.weight_norm.* is deprecated", category=FutureWarning)
            # Old checkpoints (``args`` Namespace, e.g. wav2vec_small.pt): fairseq's conversion
            # to its dataclass configs makes Hydra warn about every field; nothing to act on.
            warnings.filterwarnings("ignore", category=UserWarning, module=r"hydra(\..*)?$")
            warnings.filterwarnings("ignore", message=r"(?s).*validated against ConfigStore schema", category=UserWarning)
            state = torch.load(str(path), map_location="cpu")  # the safe load above; to see what it is
            kind = finetuned.model_type(state)
            if kind in finetuned.CTC_MODELS:
                model, cfg, task, shims = finetuned.load(path, state, dict_dir=dict_dir, vocabulary=vocabulary)
            else:
                del state
                models, cfg, _task = checkpoint_utils.load_model_ensemble_and_task([str(path)])
                model = models[0].eval()
    except HubertFixError:
        raise
    except Exception as exc:  # fairseq raises assorted types on configs it cannot use
        raise UnusableInputError(f"{path}: fairseq cannot build a model from this checkpoint: {one_line(exc, 200)}") from None
    if kind in finetuned.CTC_MODELS:
        model._hubert_fix_ctc = finetuned.vocabulary(task)  # kept on the module: the model alone does not know it
        for shim in shims:
            log.info("%s: %s", path, shim)
    if getattr(model, "ema", None) is not None:
        # data2vec's EMA teacher (training only): its state_dict entry "_ema" is a dict,
        # which torch.jit tracing cannot handle; extract_features never uses it.
        model.ema = None
    encoder = _encoder(model)
    if not callable(getattr(encoder, "extract_features", None)) or getattr(encoder, "feature_extractor", None) is None:
        raise UnusableInputError(
            f"{path}: {type(model).__name__} ({kind}) is not a fairseq speech encoder or CTC fine-tune of one "
            "(no extract_features/feature_extractor)"
        )
    task_cfg = getattr(cfg, "task", None)
    sample_rate = getattr(task_cfg, "sample_rate", None) if task_cfg is not None else None
    # Kept on the module (it survives copies) because the model alone does not know it.
    model._hubert_fix_sample_rate = int(sample_rate or DEFAULT_SAMPLE_RATE)
    log.debug("loaded %s: %s, sample rate %d", path, type(model).__name__, model._hubert_fix_sample_rate)
    return model


# ---------------------------------------------------------------- model facts


def is_ctc(model: torch.nn.Module) -> bool:
    """A fine-tuned CTC recogniser (loaded by ``load_checkpoint``), not a bare encoder."""
    return getattr(model, "_hubert_fix_ctc", None) is not None


def _encoder(model: torch.nn.Module) -> torch.nn.Module:
    """The speech encoder: the model itself, or the one a CTC fine-tune wraps."""
    wrapper = getattr(model, "w2v_encoder", None)
    return wrapper.w2v_model if wrapper is not None and hasattr(wrapper, "w2v_model") else model


def conv_stack(model: torch.nn.Module) -> ConvStack:
    """(kernel, stride) of each conv layer of the feature extractor, input first."""
    convs = [m for m in _encoder(model).feature_extractor.modules() if isinstance(m, torch.nn.Conv1d)]
    return tuple((int(c.kernel_size[0]), int(c.stride[0])) for c in convs)


def embed_dim(model: torch.nn.Module) -> int:
    """The encoder width C: channels of every frame the encoder's layers compute."""
    return int(_encoder(model).encoder.embedding_dim)


def num_layers(model: torch.nn.Module) -> int:
    return len(_encoder(model).encoder.layers)


def _check_output_layer(model: torch.nn.Module, output_layer: int | None) -> None:
    if output_layer is not None and is_ctc(model):
        raise UnusableInputError(f"--output-layer: {type(model).__name__} is a CTC recogniser; it exports its logits")
    layers = num_layers(model)
    if output_layer is not None and not 1 <= output_layer <= layers:
        raise UnusableInputError(
            f"--output-layer {output_layer}: {type(model).__name__} has transformer layers 1..{layers}"
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


def _check_final_proj(model: torch.nn.Module, final_proj: bool) -> None:
    if final_proj and (is_ctc(model) or not isinstance(getattr(model, "final_proj", None), torch.nn.Linear)):
        raise HubertFixError(f"--final-proj: {type(model).__name__} has no final_proj layer")


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


def _exported_module(
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
            f"--device cuda needs a CUDA GPU, and PyTorch sees none (torch {torch.__version__}); use --device cpu"
        )


# Converted copies per model, so that repeated reference calls (one per validation case)
# do not convert again, and the caller's fp32 model is never turned to fp16 in place
# (fp32 -> fp16 -> fp32 would lose weight precision for every later use).
_converted: weakref.WeakKeyDictionary[torch.nn.Module, dict[tuple[str, bool], torch.nn.Module]] = (
    weakref.WeakKeyDictionary()
)


def _copy_model(model: torch.nn.Module) -> torch.nn.Module:
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


def _on_device(model: torch.nn.Module, *, fp16: bool, device: str) -> torch.nn.Module:
    """The model itself for fp32 on cpu, else a cached converted copy."""
    _check_device(fp16, device)
    if not fp16 and device == "cpu":
        return model
    copies = _converted.setdefault(model, {})
    key = (device, fp16)
    if key not in copies:
        converted = _copy_model(model).to(device)
        copies[key] = (converted.half() if fp16 else converted).eval()
    return copies[key]


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
    batch, samples = static or (2, DEFAULT_SAMPLE_RATE)
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

    Returns the file's skeleton (``model_io.load_model``): torch writes a model over 2 GB
    with external data beside ``path``, and its weights are never loaded here.
    """
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise HubertFixError(f"--opset {opset}: the TorchScript exporter supports opsets {MIN_OPSET}..{MAX_OPSET}")
    _check_output_layer(model, output_layer)
    _check_final_proj(model, final_proj)
    stack, channels = conv_stack(model), embed_dim(model)
    traced = _on_device(model, fp16=fp16, device=device)
    if opset < 14 and hasattr(traced, "prepare_for_onnx_export_"):
        # Older opsets need fairseq's ONNX-trace code paths (MultiheadAttention.onnx_trace);
        # a copy, because the flag stays set on every module it touches.
        traced = _copy_model(traced)
        traced.prepare_for_onnx_export_()
    dtype = torch.float16 if fp16 else torch.float32
    example = _trace_example(stack, channels, dtype=dtype, device=device, static=static)
    ctc = is_ctc(model)
    module = _exported_module(model, traced, output_layer, final_proj)
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
    _set_metadata(exported.proto, model, stack, channels, output_layer, fp16, final_proj)
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
    set_metadata(full, {entry.key: entry.value for entry in exported.proto.metadata_props})
    return full


def _log_warnings(caught: list[warnings.WarningMessage]) -> None:
    """TracerWarnings are expected (the frozen branches are the point); one debug line."""
    tracer = [w for w in caught if issubclass(w.category, torch.jit.TracerWarning)]
    if tracer:
        log.debug("export: %d TracerWarning(s) (expected: data-dependent branches are frozen)", len(tracer))
    for w in caught:
        if not issubclass(w.category, torch.jit.TracerWarning):
            log.debug("export: %s: %s", w.category.__name__, one_line(w.message, 200))


def _set_metadata(
    proto: onnx.ModelProto,
    model: torch.nn.Module,
    stack: ConvStack,
    channels: int,
    output_layer: int | None,
    fp16: bool,
    final_proj: bool,
) -> None:
    meta = {
        "hubert_fix.conv_stack": json.dumps([list(pair) for pair in stack]),
        "hubert_fix.embed_dim": str(channels),
        "hubert_fix.output_dim": str(model.final_proj.out_features if final_proj else channels),
        "hubert_fix.final_proj": "1" if final_proj else "",
        "hubert_fix.output_layer": "" if output_layer is None else str(output_layer),
        "hubert_fix.precision": "fp16" if fp16 else "fp32",
        "hubert_fix.model": type(model).__name__,
        "hubert_fix.exporter": f"torch.onnx TorchScript, torch {torch.__version__}",
        "hubert_fix.sample_rate": str(getattr(model, "_hubert_fix_sample_rate", DEFAULT_SAMPLE_RATE)),
    }
    if is_ctc(model):
        symbols, blank, pad = model._hubert_fix_ctc
        meta.update({
            "hubert_fix.output_dim": str(len(symbols)),
            "hubert_fix.kind": "ctc",
            "hubert_fix.vocabulary": json.dumps(symbols, ensure_ascii=False),
            "hubert_fix.blank_index": str(blank),
            "hubert_fix.pad_index": str(pad),
            "hubert_fix.logits": (
                "logits [batch, frames, vocab]: fairseq's get_logits (time-major [frames, batch, vocab]) transposed; "
                "frame_padding_mask [batch, frames]: True where a frame is padding (drop those frames before decoding)"
            ),
        })  # fmt: skip
    set_metadata(proto, meta)


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
    _check_output_layer(model, output_layer)
    _check_final_proj(model, final_proj)
    runner = _on_device(model, fp16=fp16, device=device)
    dtype = torch.float16 if fp16 else torch.float32
    with torch.no_grad():
        outputs = _exported_module(model, runner, output_layer, final_proj)(
            torch.from_numpy(np.ascontiguousarray(source)).to(device=device, dtype=dtype),
            torch.from_numpy(np.ascontiguousarray(padding_mask, dtype=bool)).to(device),
        )
    features = outputs[0] if isinstance(outputs, tuple) else outputs  # a recogniser's logits, not its frame mask
    return features.float().cpu().numpy()
