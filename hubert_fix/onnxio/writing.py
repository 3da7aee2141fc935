"""Writing models and reports atomically: temporary files beside the targets, then renames, so OUT is
either the complete new file or untouched (also on error or Ctrl-C)."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import tempfile
from pathlib import Path

from hubert_fix.errors import UnusableInputError, one_line
from hubert_fix.onnxio import skeleton
from hubert_fix.onnxio.outputs import check_model_output, check_output_path, data_path, read_files, same_file
from hubert_fix.onnxio.reading import ModelFile

log = logging.getLogger(__name__)


def process_umask() -> int:
    """The process umask (mkstemp creates 0600 files; OUT gets the usual permissions)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_model(model: ModelFile, out: Path, *, in_place: bool = False) -> None:
    """Write ``model`` to ``out`` atomically: temp files in the same folder, then rename.

    Weights are copied file to file (see skeleton.write). An external-data model gets
    its weights in ``OUT.data``; that file is renamed into place just before OUT, with
    Ctrl-C held off between the two renames. ``in_place`` and OUT is the model itself:
    the data files the old model referenced and the new one does not (one file per
    tensor, as torch writes them) are removed once OUT is in place, so no orphan is left.
    """
    check_model_output(model, out, read_files(model), in_place=in_place)
    outside = model.spans()
    targets = [out]
    same_as_input = model.source is not None and same_file(out, model.source)
    if model.external_data and outside:
        targets.insert(0, data_path(out))
    staged: list[tuple[int, Path, Path]] = []
    try:
        for target in targets:
            fd, tmp = _temp_beside(target)
            staged.append((fd, Path(tmp), target))
        data_fd = (staged[0][0], targets[0].name) if len(staged) == 2 else None
        skeleton.write(model.proto, outside, staged[-1][0], data=data_fd)
        for index, (fd, tmp, target) in enumerate(staged):
            os.fsync(fd)
            os.close(fd)
            staged[index] = (-1, tmp, target)
            os.chmod(tmp, 0o666 & ~process_umask())
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            for _, tmp, target in staged:
                os.replace(tmp, target)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        if in_place and same_as_input and model.external_data:  # only when MODEL itself was replaced
            _remove_orphans({span.file for span in outside.values()}, keep=targets)
    except BaseException as exc:
        for fd, tmp, _ in staged:
            if fd >= 0:
                os.close(fd)
            tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise UnusableInputError(f"{out}: cannot write: {one_line(exc.strerror or exc)}") from None
        raise
    log.debug("wrote %s (%.1f MB)", out, sum(t.stat().st_size for t in targets) / 1e6)


def _remove_orphans(referenced: set[Path], *, keep: list[Path]) -> None:
    """Remove the old model's data files that the new one does not use (never one of ``keep``)."""
    for old in referenced:
        if old.exists() and not any(same_file(old, k) for k in keep):
            old.unlink()
            log.debug("removed %s, no longer referenced", old)


def write_bytes(path: Path, data: bytes) -> None:
    """Write a report file atomically (temp file beside it, then rename), or UnusableInputError."""
    check_output_path(path)
    fd, tmp = _temp_beside(path)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o666 & ~process_umask())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise UnusableInputError(f"{path}: cannot write: {one_line(exc.strerror or exc)}") from None
        raise


def synced(*paths: Path) -> None:
    """Each file on disk (``fsync``): for files a library wrote (OpenVINO's ``save_model``) before
    they are renamed into place or mapped."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def staging(out: Path) -> Path:
    """A private folder beside OUT (same file system: the final rename is atomic), for files
    written and checked before OUT is; ``discard`` removes it."""
    return Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent if str(out.parent) else "."))


def discard(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)


def _temp_beside(target: Path) -> tuple[int, str]:
    parent = target.parent if str(target.parent) else Path(".")
    return tempfile.mkstemp(dir=parent, prefix=f".{target.name}.", suffix=".tmp")
