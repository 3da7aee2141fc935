"""Output paths, checked before any work: writable, and none of the files a command reads (by any name)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from hubert_fix.errors import UnusableInputError
from hubert_fix.onnxio.reading import STREAM, STREAM_REFUSED, ModelFile


def same_file(a: Path, b: Path) -> bool:
    """``a`` and ``b`` name one file: the same path, a symlink to it, or a hard link."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet): only the resolved paths can tell
        return os.path.realpath(a) == os.path.realpath(b)


def _same_path(a: Path, b: Path) -> bool:
    """The same name (not just the same file: renaming onto a link replaces the link)."""
    return os.path.abspath(a) == os.path.abspath(b)


def read_files(
    model: ModelFile | None = None, *, files: Iterable[Path | None] = (), dict_dir: Path | None = None
) -> list[Path]:
    """Every file a command reads: MODEL and its external data files, a checkpoint or
    reference, and the vocabularies in a ``--dict-dir`` (outputs are checked against these)."""
    reads = [Path(f) for f in files if f is not None]
    if model is not None and model.source is not None:
        reads += [model.source, *sorted({span.file for span in model.spans().values()})]
    if dict_dir is not None and Path(dict_dir).is_dir():
        reads += sorted(Path(dict_dir).glob("dict.*.txt"))
    return reads


def check_output_path(out: Path, *, reads: Iterable[Path] = (), replaces: Path | None = None) -> None:
    """Fail before any work if OUT cannot be written, or is a file the command reads.

    ``reads``: every file the command reads (see ``read_files``); OUT may be none of them,
    by any name (a symlink, a hard link), except ``replaces`` (``--in-place``: MODEL, by its own name).
    """
    if str(out) == STREAM:
        raise UnusableInputError(f"-: {STREAM_REFUSED}")
    for read in reads:
        if same_file(out, read) and not (
            replaces is not None and _same_path(out, replaces) and same_file(read, replaces)
        ):
            raise UnusableInputError(
                f"{out}: output is the same file as {read}, which this command reads; choose another path"
            )
    if out.is_dir():
        raise UnusableInputError(f"{out}: output path is a directory")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise UnusableInputError(f"{out}: output directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UnusableInputError(f"{out}: output directory {parent} is not writable")


def check_model_output(model: ModelFile, out: Path, reads: Iterable[Path], *, in_place: bool = False) -> None:
    """OUT, and OUT.data when the model keeps its weights in files, against every file read.

    With ``in_place`` OUT may be MODEL itself, and then OUT.data may be MODEL's data file
    (both are replaced by complete new files, renamed into place).
    """
    reads = list(reads)
    replaces = model.source if in_place else None
    check_output_path(out, reads=reads, replaces=replaces)
    if model.external_data and model.spans():
        own = set(read_files(model)) if replaces is not None and same_file(out, replaces) else set()
        check_output_path(data_path(out), reads=[r for r in reads if r not in own])


def data_path(out: Path) -> Path:
    """Where the weights of an external-data output go: next to OUT, named after it."""
    return out.with_name(out.name + ".data")
