"""What a command is (Polygraphy's ``Tool``): a class whose docstring is its help, and the
argument groups several commands share.

A tool's docstring: the first line is the summary (the commands list of ``hubert-fix
--help``), the rest its description; the exit codes come from ``errors.EXITS``.
``add_arguments`` declares its options, ``run`` carries them out and returns an exit code.
"""

from __future__ import annotations

import abc
import argparse
import inspect
from pathlib import Path
from typing import ClassVar, NoReturn

from hubert_fix.cli.console import Console
from hubert_fix.errors import EXIT_INTERNAL, EXIT_USAGE, EXITS, UsageError
from hubert_fix.exporter.reference import Checkpoint

MODEL_HELP = "the ONNX model (a file; its external data files, if any, beside it)"


class CommandLineError(UsageError):
    """argparse's usage error, with the command (``prog``) whose grammar it broke."""

    def __init__(self, message: str, prog: str) -> None:
        super().__init__(message)
        self.prog = prog


class Parser(argparse.ArgumentParser):
    """argparse whose usage errors are CommandLineError (exit 64, one line) instead of exit 2,
    the code of unusable input; options are spelled in full (no abbreviations)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, allow_abbrev=False, **kwargs)  # type: ignore[arg-type]

    def error(self, message: str) -> NoReturn:
        raise CommandLineError(f"{message} (see {self.prog} --help)", self.prog)


class Tool(abc.ABC):
    """One ``hubert-fix`` command."""

    name: ClassVar[str]

    @classmethod
    def summary(cls) -> str:
        """The docstring's first line, without its full stop."""
        return inspect.getdoc(cls).splitlines()[0].rstrip(".")

    @classmethod
    def description(cls) -> str:
        """The summary, the rest of the docstring as one paragraph, then the exit codes."""
        rest = " ".join(" ".join(inspect.getdoc(cls).splitlines()[1:]).split())
        exits = "; ".join(f"{code}: {meaning}" for code, meaning in EXITS[cls.name].items())
        return f"{cls.summary()}. {rest + ' ' if rest else ''}Exit {exits}; {EXIT_INTERNAL}: internal error; {EXIT_USAGE}: usage error."

    @abc.abstractmethod
    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """The command's options and positionals."""

    @abc.abstractmethod
    def run(self, args: argparse.Namespace, console: Console) -> int:
        """Carry out the command; its exit code (errors are raised, ``main`` tells them)."""


# ---------------------------------------------------------------- argument groups several tools share


def add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def add_skip(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--skip", action="append", default=[], metavar="PASS", help="leave out a pass (see: hubert-fix passes)"
    )


def add_checkpoint_loading(parser: argparse.ArgumentParser) -> None:
    """How a fairseq checkpoint is read (export, and validate/optimize with --checkpoint)."""
    parser.add_argument(
        "--trust-checkpoint",
        action="store_true",
        help="unpickle the checkpoint without torch's weights_only allowlist (only for files you trust)",
    )
    parser.add_argument(
        "--dict-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="a CTC fine-tune that does not carry its vocabulary: the folder holding its dict.ltr.txt",
    )


def checkpoint(args: argparse.Namespace) -> Checkpoint | None:
    """The checkpoint the options name, read as ``add_checkpoint_loading``'s options say (None without one)."""
    if getattr(args, "checkpoint", None) is None:
        return None
    return Checkpoint(
        args.checkpoint, trust_checkpoint=args.trust_checkpoint, dict_dir=args.dict_dir,
        output_layer=getattr(args, "output_layer", None), final_proj=getattr(args, "final_proj", False) or None,
    )  # fmt: skip


def add_speech_files(parser: argparse.ArgumentParser, flag: str, what: str) -> None:
    """An option taking a speech file, repeated for more: one file per flag, so that a list
    never swallows the MODEL that follows it (``--audio a.wav MODEL.onnx``)."""
    help = f"a speech file (WAV, FLAC, OGG; the [audio] extra), repeat {flag} for more: {what}"
    parser.add_argument(flag, action="append", default=[], type=Path, metavar="FILE", help=help)


def add_quick(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="leave out the 10 s input")
