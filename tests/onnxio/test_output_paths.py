"""No command ever writes over a file it reads: every output against every input, by every name.

Outputs: OUT (repair, optimize, export), OUT.data (an external-data model's weights),
``--junit-xml`` (validate) and the files of ``demo --out-dir``. Inputs: MODEL and its
data file, ``--reference``, ``--checkpoint`` and the vocabulary in ``--dict-dir``. Names:
the path itself, a symlink to it and a hard link to it. Each combination is refused
with exit 2 (the API: UnusableInputError) and one line, before any work, and every
file is left as it was; ``--in-place`` with an ``-o`` that is not MODEL's own name is
refused by the CLI first, as the contradictory command line it is (exit 64).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest
from conftest import CASES, FIXTURES, run_main

import hubert_fix
from hubert_fix.cli.demo import run_demo
from hubert_fix.errors import UnusableInputError

READS = ["model", "model-data", "reference", "checkpoint", "dict"]
NAMES = ["same", "symlink", "hardlink"]


def _inputs(tmp_path: Path) -> dict[str, Path]:
    folder = tmp_path / "in"
    shutil.copytree(FIXTURES / "hubert_base_tiny.external", folder)
    model = folder / "model.onnx"
    data = next(p for p in folder.iterdir() if p != model)
    (tmp_path / "vocab").mkdir()
    (tmp_path / "vocab" / "dict.ltr.txt").write_text("| 1\nE 1\n")
    checkpoint = tmp_path / "ckpt.pt"
    checkpoint.write_bytes(b"not read: the output is refused first")
    reference = tmp_path / "cases.npz"
    shutil.copyfile(CASES, reference)
    return {
        "model": model,
        "model-data": data,
        "reference": reference,
        "checkpoint": checkpoint,
        "dict": tmp_path / "vocab" / "dict.ltr.txt",
    }


def _name(read: Path, how: str, where: Path) -> Path:
    """Another name for ``read`` in ``where`` (or the path itself)."""
    if how == "same":
        return read
    alias = where / f"alias-{how}{read.suffix}"
    (alias.symlink_to(read) if how == "symlink" else os.link(read, alias))
    return alias


def _snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink()
    }  # fmt: skip


#: (command line, the inputs it reads); ``{out}`` is where the output goes.
def _commands(inputs: dict[str, Path], out: Path) -> list[tuple[list[object], set[str]]]:
    model, ckpt, vocab = inputs["model"], inputs["checkpoint"], inputs["dict"].parent
    own = {"model", "model-data"}
    return [
        (
            ["validate", model, "--junit-xml", out, "--checkpoint", ckpt, "--dict-dir", vocab],
            own | {"checkpoint", "dict"},
        ),
        (["validate", model, "--junit-xml", out, "--reference", inputs["reference"]], own | {"reference"}),
        (["optimize", model, "-o", out, "--checkpoint", ckpt, "--dict-dir", vocab], own | {"checkpoint", "dict"}),
        (["repair", model, "-o", out], own),
        (["repair", model, "-o", out, "--in-place"], own),
        (["export", ckpt, "-o", out, "--dict-dir", vocab], {"checkpoint", "dict"}),
    ]


@pytest.mark.parametrize("how", NAMES)
@pytest.mark.parametrize("read", READS)
def test_no_output_is_a_file_the_command_reads(tmp_path: Path, read: str, how: str) -> None:
    inputs = _inputs(tmp_path)
    target = _name(inputs[read], how, tmp_path)
    runs = [argv for argv, reads in _commands(inputs, target) if read in reads]
    if read == "model" and how == "same":  # what --in-place is for
        runs = [argv for argv in runs if "--in-place" not in argv]
    assert runs
    before = _snapshot(tmp_path)
    for argv in runs:
        code, out, err = run_main(*argv)
        assert code == (64 if "--in-place" in argv else 2) and len(err.strip().splitlines()) == 1, (argv, err)
        assert any(why in err for why in ("which this command reads", "is the input model", "give one of them")), (
            argv,
            err,
        )
        assert _snapshot(tmp_path) == before, argv


@pytest.mark.parametrize("how", ["symlink", "hardlink"])
@pytest.mark.parametrize("read", [r for r in READS if r != "reference"])  # no command writing a model reads one
def test_out_data_is_never_a_file_the_command_reads(tmp_path: Path, read: str, how: str) -> None:
    """An external-data model's OUT.data is an output too (repair, optimize; export, when over 2 GB)."""
    inputs = _inputs(tmp_path)
    out = tmp_path / "out.onnx"
    _name(inputs[read], how, tmp_path).rename(tmp_path / "out.onnx.data")
    runs = [
        argv for argv, reads in _commands(inputs, out) if read in reads and "-o" in argv and "--in-place" not in argv
    ]
    assert runs
    before = _snapshot(tmp_path)
    for argv in runs:
        code, _, err = run_main(*argv)
        assert code == 2 and "out.onnx.data: output is the same file as" in err, (argv, err)
        assert _snapshot(tmp_path) == before and not out.exists(), argv


@pytest.mark.parametrize("how", NAMES)
@pytest.mark.parametrize("read", READS)
def test_the_api_refuses_the_same(tmp_path: Path, read: str, how: str) -> None:
    inputs = _inputs(tmp_path)
    target = _name(inputs[read], how, tmp_path)
    model = inputs["model"]
    ckpt = hubert_fix.Checkpoint(inputs["checkpoint"], dict_dir=inputs["dict"].parent)
    calls = [
        (lambda: hubert_fix.validate(model, checkpoint=ckpt, junit_xml=target), {"checkpoint", "dict"}),
        (lambda: hubert_fix.validate(model, reference=inputs["reference"], junit_xml=target), {"reference"}),
        (lambda: hubert_fix.optimize(model, target, checkpoint=ckpt), {"checkpoint", "dict"}),
        (lambda: hubert_fix.repair(model, target), set()),
    ]
    before = _snapshot(tmp_path)
    for call, reads in calls:
        if read not in reads | {"model", "model-data"}:
            continue
        with pytest.raises(UnusableInputError, match="which this command reads|is the input model"):
            call()
        assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("how", ["symlink", "hardlink"])
def test_in_place_replaces_the_model_by_its_own_name_only(tmp_path: Path, how: str) -> None:
    """Another name for MODEL is not "in place": renaming onto it would leave MODEL as it was
    (the CLI refuses -o with --in-place unless -o is MODEL's own name; so does the API)."""
    model = _inputs(tmp_path)["model"]
    alias = _name(model, how, tmp_path)
    before = _snapshot(tmp_path)
    code, _, err = run_main("repair", model, "-o", alias, "--in-place")
    assert code == 64 and "give one of them" in err and _snapshot(tmp_path) == before
    with pytest.raises(UnusableInputError, match="which this command reads"):
        hubert_fix.repair(model, alias, in_place=True)
    assert _snapshot(tmp_path) == before
    assert run_main("repair", model, "--in-place")[0] == 0


@pytest.mark.parametrize("how", NAMES)
def test_demo_out_dir_never_overwrites_the_checkpoint(tmp_path: Path, how: str) -> None:
    folder = tmp_path / "package"
    folder.mkdir()
    checkpoint = folder / "hubert_base_tiny.pt"
    checkpoint.write_bytes(b"the embedded checkpoint")
    out_dir = folder if how == "same" else tmp_path / "out"
    if how != "same":
        out_dir.mkdir()
        (out_dir / checkpoint.name).symlink_to(checkpoint) if how == "symlink" else os.link(
            checkpoint, out_dir / checkpoint.name
        )
    before = _snapshot(tmp_path)
    with pytest.raises(UnusableInputError, match="which this command reads"):
        run_demo(checkpoint, out_dir, console=None)  # refused before the console is used
    assert _snapshot(tmp_path) == before
