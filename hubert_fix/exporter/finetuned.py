"""fairseq's fine-tuned CTC recognisers (``wav2vec_ctc``, ``hubert_ctc``), loaded as users have them.

A fine-tune wraps the pretrained encoder (``w2v_encoder.w2v_model``), rebuilt at load
time from the pretraining config the fine-tune embedded (``w2v_args``); the pretrained
``w2v_path`` it names is read only when ``w2v_args`` is missing, and users never have
it. fairseq's own loader (``checkpoint_utils.load_model_ensemble_and_task``) loads a
trainer-saved ``wav2vec_ctc`` as it is. The others fail on today's fairseq in ways
that do not depend on the weights; each shim below is applied only to the checkpoint
that needs it, in memory, and nothing in fairseq is edited:

1. ``hubert_ctc``: ``HubertEncoder`` reads ``cfg.autoregressive``, a key
   ``HubertCtcConfig`` lacks (``Key 'autoregressive' not in 'HubertCtcConfig'``, fairseq
   #4916). While building, ``hubert_ctc`` is registered with a subclass that has
   ``autoregressive = False`` (what a CTC model is; adding the key to the saved config
   does not help: fairseq drops keys its dataclass lacks).
2. ``hubert_ctc``: the rebuilt pretraining task reads its k-means label dictionary
   (``dict.km.txt``) from the pretraining run's ``label_dir``, which users do not have.
   Its only use is the row count of ``label_embs_concat``, a pretraining-only weight the
   fine-tune still holds; the task gets a placeholder dictionary of exactly that many
   entries (or none, when the weights have no such rows). Strict loading still checks
   every weight.
3. A fine-tune saved before ``audio_finetuning`` was split off ``audio_pretraining``
   (every ``args``-style one, and hydra ones like ``wav2vec2_vox_960h_new.pt``) names
   task ``audio_pretraining``, which has no target dictionary (``object of type
   'NoneType' has no len()``, fairseq #4691): its own task (not ``w2v_args.task``) is
   renamed ``audio_finetuning``, whose config is a superset.
4. ``args``-style (fairseq <= 0.10, e.g. ``wav2vec_small_960h.pt``): the pretraining
   Namespace nested in ``args.w2v_args`` breaks fairseq's conversion to a config
   (``Could not override 'model.w2v_args.common...'``); the two Namespaces are converted
   separately, each by fairseq's own converter.
5. The letter dictionary: a trainer-saved fine-tune carries it (``task_state``); older
   ones read ``<data>/dict.<labels>.txt``, so ``dict_dir`` (``--dict-dir``) names the
   folder holding it (fairseq's own remedy: the ``data`` override).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from fairseq import checkpoint_utils
from fairseq.data.dictionary import Dictionary
from fairseq.dataclass.utils import convert_namespace_to_omegaconf
from fairseq.models import MODEL_DATACLASS_REGISTRY
from fairseq.models.hubert.hubert_asr import HubertCtcConfig
from omegaconf import open_dict

from hubert_fix.errors import UnusableInputError, argument

CTC_MODELS = ("wav2vec_ctc", "hubert_ctc")
LABEL_EMBS = "w2v_encoder.w2v_model.label_embs_concat"


@dataclasses.dataclass
class _HubertCtcConfig(HubertCtcConfig):
    """``HubertCtcConfig`` with the key ``HubertEncoder`` reads (fairseq #4916); False is CTC."""

    autoregressive: bool = False


@contextlib.contextmanager
def hubert_ctc_autoregressive() -> Iterator[None]:
    """While active, ``hubert_ctc`` models are built from ``_HubertCtcConfig`` (restored after)."""
    original = MODEL_DATACLASS_REGISTRY["hubert_ctc"]
    MODEL_DATACLASS_REGISTRY["hubert_ctc"] = _HubertCtcConfig
    try:
        yield
    finally:
        MODEL_DATACLASS_REGISTRY["hubert_ctc"] = original


def _get(obj: Any, key: str, default: Any = None) -> Any:
    """``obj[key]`` of a dict or DictConfig, ``getattr`` of a Namespace."""
    if obj is None:
        return default
    if hasattr(obj, "keys"):
        return obj[key] if key in obj else default
    return getattr(obj, key, default)


def model_type(state: dict[str, Any]) -> str | None:
    """The fairseq model name a checkpoint's config records (``arch`` for args-style)."""
    if state.get("args") is not None:
        return _get(state["args"], "arch")
    return _get(_get(state.get("cfg"), "model"), "_name")


def load(
    path: Path, state: dict[str, Any], *, dict_dir: Path | None, vocabulary: list[str] | None = None
) -> tuple[torch.nn.Module, Any, Any, list[str]]:
    """A CTC fine-tune's model (eval mode), fairseq's cfg and task, and the shims applied.

    ``state`` is the checkpoint as ``torch.load`` read it (the caller's safe unpickler);
    fairseq reads the file again through the same ``torch.load``. A checkpoint without
    its vocabulary reads ``dict.<labels>.txt`` beside it, else in ``dict_dir``, else
    ``vocabulary`` (an exported model's record of it, written as that file for fairseq).
    """
    with tempfile.TemporaryDirectory(prefix="hubert-fix-vocabulary-") as spare:
        return _load(path, state, dict_dir=dict_dir, vocabulary=vocabulary, spare=Path(spare))


def _load(
    path: Path, state: dict[str, Any], *, dict_dir: Path | None, vocabulary: list[str] | None, spare: Path
) -> tuple[torch.nn.Module, Any, Any, list[str]]:
    args_style = state.get("args") is not None
    name = model_type(state)
    model_cfg = state["args"] if args_style else state["cfg"]["model"]
    task_cfg = state["args"] if args_style else state["cfg"]["task"]
    if _get(model_cfg, "w2v_args") is None:
        raise UnusableInputError(
            f"{path}: this {name} checkpoint holds no pretraining config (w2v_args), so fairseq would rebuild its "
            f"encoder from w2v_path={_get(model_cfg, 'w2v_path')!r}, which is not here; load it once on the machine "
            "that has that file and save it again (fairseq then embeds w2v_args)"
        )
    applied: list[str] = []
    overrides: dict[str, Any] = {}
    legacy_task = _get(task_cfg, "task" if args_style else "_name") == "audio_pretraining"
    if legacy_task and args_style:
        overrides["task"] = "audio_finetuning"
    if not isinstance((state.get("task_state") or {}).get("target_dictionary"), Dictionary):
        labels = _get(task_cfg, "labels") or "ltr"
        label = labels if isinstance(labels, str) else list(labels)[0]
        wanted = f"dict.{label}.txt"
        if dict_dir is None and (path.parent / wanted).is_file():  # where fairseq users keep it
            dict_dir = path.parent
        if dict_dir is None and vocabulary is not None:
            dict_dir = _dictionary_file(vocabulary, spare / wanted, path)
        if dict_dir is None:
            raise UnusableInputError(
                f"{path}: the CTC vocabulary is not in this checkpoint (fairseq reads it from {wanted}) and there is no "
                f"{wanted} beside it; give the folder that holds it as {argument('dict_dir')}"
            )
        if not (Path(dict_dir) / wanted).is_file():
            raise UnusableInputError(
                f"{path}: the CTC vocabulary is not in this checkpoint (fairseq reads it from {wanted}), and "
                f"{argument('dict_dir', str(dict_dir))} has no {wanted}; give the folder that holds it"
            )
        overrides["data"] = str(dict_dir)
        if _get(task_cfg, "label_dir") is not None:
            overrides["label_dir"] = str(dict_dir)
        applied.append(f"vocabulary read from {Path(dict_dir) / wanted} (data override)")
    if args_style:
        loaded = _from_args(state, overrides)
        applied.append("args-style: args and the nested w2v_args converted to configs separately")
    else:
        loaded = checkpoint_utils.load_checkpoint_to_cpu(str(path), overrides or None)
    if legacy_task:
        # the fine-tune's own task only: an arg_overrides {"task": ...} would rename w2v_args.task too
        with open_dict(loaded["cfg"]):
            loaded["cfg"].task._name = "audio_finetuning"
        applied.append("task audio_pretraining renamed audio_finetuning (saved before the split)")
    shim = contextlib.nullcontext()
    if name == "hubert_ctc":
        shim = hubert_ctc_autoregressive()
        placeholder = _pretraining_dictionaries(state)
        loaded["task_state"] = {**(loaded.get("task_state") or {}), "dictionaries": placeholder}
        applied.append("hubert_ctc: built with autoregressive=False (fairseq #4916)")
        applied.append(
            f"hubert_ctc: pretraining label dictionary replaced by {len(placeholder[0] or [])} placeholder entries"
        )
    with shim:
        models, cfg, task = checkpoint_utils.load_model_ensemble_and_task([str(path)], state=loaded)
    return models[0].eval(), cfg, task, applied


FAIRSEQ_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]


def _dictionary_file(vocabulary: list[str], target: Path, path: Path) -> Path:
    """Write ``vocabulary`` (fairseq's symbols in order) as the file fairseq's Dictionary reads; its folder."""
    if vocabulary[: len(FAIRSEQ_SPECIALS)] != FAIRSEQ_SPECIALS:
        raise UnusableInputError(
            f"{path}: the model's recorded vocabulary does not begin with fairseq's special symbols; "
            f"give the folder holding {target.name} as {argument('dict_dir')}"
        )
    target.write_text("".join(f"{symbol} 1\n" for symbol in vocabulary[len(FAIRSEQ_SPECIALS) :]), encoding="utf-8")
    return target.parent


def _pretraining_dictionaries(state: dict[str, Any]) -> list[Dictionary | None]:
    """What the rebuilt HubertModel needs of its k-means dictionary: the rows of label_embs_concat."""
    rows = state["model"].get(LABEL_EMBS)
    if rows is None:
        return [None]
    dictionary = Dictionary()  # its 4 special symbols count
    for index in range(rows.shape[0] - len(dictionary)):
        dictionary.add_symbol(f"km{index}")
    return [dictionary]


def _from_args(state: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """An args-style fine-tune as the config-style state fairseq's converters make of each part.

    The outer Namespace goes through fairseq's state upgrade (with ``w2v_args`` taken out
    and the overrides set on it, as ``load_checkpoint_to_cpu`` does); the pretraining
    Namespace through ``convert_namespace_to_omegaconf`` (what ``Wav2VecEncoder`` does
    with a Namespace), and goes back in as ``cfg.model.w2v_args``.
    """
    args = copy.copy(state["args"])
    pretraining, args.w2v_args = args.w2v_args, None
    for key, value in overrides.items():
        setattr(args, key, value)
    upgraded = checkpoint_utils._upgrade_state_dict({**state, "args": args})
    with open_dict(upgraded["cfg"]):
        upgraded["cfg"].model.w2v_args = (
            convert_namespace_to_omegaconf(pretraining) if isinstance(pretraining, argparse.Namespace) else pretraining
        )
    upgraded["args"] = None
    return upgraded


def vocabulary(task: Any) -> tuple[list[str], int, int]:
    """The CTC output symbols in order, the blank index and the pad index.

    fairseq's CTC criterion and decoders use ``<ctc_blank>`` when the dictionary has
    it, else the bos symbol ``<s>`` (index 0), as blank; ``get_logits`` forces the blank
    on padded frames.
    """
    dictionary = task.target_dictionary
    symbols = list(dictionary.symbols)
    blank = dictionary.index("<ctc_blank>") if "<ctc_blank>" in dictionary.indices else dictionary.bos()
    return symbols, int(blank), int(dictionary.pad())
