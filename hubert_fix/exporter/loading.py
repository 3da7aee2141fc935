"""Load a fairseq checkpoint safely with fairseq's own loader (torch's weights_only unpickler
and an allowlist by default), and import fairseq without its side effects on logging.

This module imports torch and fairseq at the top; callers reach it through
``hubert_fix.exporter.require`` so that the repair path never needs them.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import logging
import re
import typing
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import omegaconf
import omegaconf.base
import omegaconf.nodes
import torch

try:  # the module (torch.nn.utils.weight_norm is the function); deprecated, may go away
    from torch.nn.utils.weight_norm import WeightNorm
except ImportError:  # pragma: no cover - newer torch: fairseq then cannot use it either
    WeightNorm = None

from hubert_fix.analysis.convstack import SAMPLE_RATE
from hubert_fix.errors import HubertFixError, UnusableInputError, argument, one_line

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
import fairseq.models.wav2vec.wav2vec2 as fairseq_wav2vec2  # noqa: E402, F401 - trace shims its pad_to_multiple
from fairseq import checkpoint_utils  # noqa: E402

from hubert_fix.exporter import finetuned  # noqa: E402 - imports fairseq's ASR models: after the quiet import
from hubert_fix.exporter.modules import speech_encoder  # noqa: E402


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
_SAFE_LOAD = (
    hasattr(torch.serialization, "safe_globals") and torch.torch_version.TorchVersion(torch.__version__) >= "2.6"
)
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
                f"upgrade torch, or re-run with {argument('trust_checkpoint', True)} only if you trust this file"
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
            f"re-run with {argument('trust_checkpoint', True)} only if you trust this file (unpickling can run code)"
        )
    if "Weights only load failed" in text:
        return UnusableInputError(
            f"{path}: the safe loader rejects this checkpoint ({one_line(text.split('Please file')[0], 160)}); "
            f"re-run with {argument('trust_checkpoint', True)} only if you trust this file (unpickling can run code)"
        )
    # _check_magic let it through: it begins as torch.save's zip archive or pickle does
    detail = "its zip archive ends before its directory" if _cut_short_zip(path) else one_line(exc, 160)
    return UnusableInputError(f"{path}: not a readable PyTorch checkpoint (truncated or corrupt?): {detail}")


def _cut_short_zip(path: Path) -> bool:
    """A zip archive's directory is at its end: a file cut short has none (torch then says
    only "[Errno 22] Invalid argument" or "failed finding central directory")."""
    with path.open("rb") as f:
        return f.read(4) == _CHECKPOINT_MAGIC[0] and not zipfile.is_zipfile(f)


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
        raise UnusableInputError(f"{dict_dir}: {argument('dict_dir')}: no such folder")
    _check_magic(path)
    try:
        with _quiet_fairseq(), _checked_torch_load(path, trust=trust), warnings.catch_warnings():
            # fairseq builds pos_conv with the deprecated weight_norm: not the user's concern
            warnings.filterwarnings(
                "ignore", message=r".*torch\.nn\.utils\.weight_norm.* is deprecated", category=FutureWarning
            )
            # Old checkpoints (``args`` Namespace, e.g. wav2vec_small.pt): fairseq's conversion
            # to its dataclass configs makes Hydra warn about every field; nothing to act on.
            warnings.filterwarnings("ignore", category=UserWarning, module=r"hydra(\..*)?$")
            warnings.filterwarnings(
                "ignore", message=r"(?s).*validated against ConfigStore schema", category=UserWarning
            )
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
        raise UnusableInputError(
            f"{path}: fairseq cannot build a model from this checkpoint: {one_line(exc, 200)}"
        ) from None
    if kind in finetuned.CTC_MODELS:
        model._hubert_fix_ctc = finetuned.vocabulary(task)  # kept on the module: the model alone does not know it
        for shim in shims:
            log.info("%s: %s", path, shim)
    if getattr(model, "ema", None) is not None:
        # data2vec's EMA teacher (training only): its state_dict entry "_ema" is a dict,
        # which torch.jit tracing cannot handle; extract_features never uses it.
        model.ema = None
    encoder = speech_encoder(model)
    if not callable(getattr(encoder, "extract_features", None)) or getattr(encoder, "feature_extractor", None) is None:
        raise UnusableInputError(
            f"{path}: {type(model).__name__} ({kind}) is not a fairseq speech encoder or CTC fine-tune of one "
            "(no extract_features/feature_extractor)"
        )
    task_cfg = getattr(cfg, "task", None)
    sample_rate = getattr(task_cfg, "sample_rate", None) if task_cfg is not None else None
    # Kept on the module (it survives copies) because the model alone does not know it.
    model._hubert_fix_sample_rate = int(sample_rate or SAMPLE_RATE)
    log.debug("loaded %s: %s, sample rate %d", path, type(model).__name__, model._hubert_fix_sample_rate)
    return model
