"""The ``hubert-fix`` command line: a shell over the Python API (``hubert_fix.api``).

Exit codes (stable; pipelines depend on them):
  0  success: nothing to repair (check), OUT written (repair, export, optimize), all checks pass (validate)
  1  check: repairable problems found; validate/export: a validation check failed; optimize: the
     candidate missed its tolerance (nothing written)
  2  unusable input: missing/damaged file, bad checkpoint, unwritable output, device not usable
  3  check/repair/export: problems found that no pass can repair, or a repair that would not load (repair and
     export write nothing); optimize: MODEL needs repair first
  4  internal error: a failure of hubert-fix itself, not a verdict (one line on stderr names the file and the
     report with the traceback): stop the pipeline and report it
  130 interrupted (Ctrl-C, also during start-up; nothing written), 141 stdout closed early (e.g. piped to head)
Reports go to stdout (--json: one JSON object, with "error" and "exit_code" when it failed); logs, progress
and errors go to stderr.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import re
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path

from onnx_graphsurgeon.logger import G_LOGGER

from hubert_fix import __version__, api, runner
from hubert_fix.errors import EXIT_FOUND, EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_OK, EXIT_UNREPAIRABLE, HubertFixError, UnusableInputError
from hubert_fix.extras import export_module, pytorch_reference
from hubert_fix.interface import ROLES, parse_roles
from hubert_fix.model_io import check_output_path, data_path, one_line, read_files, save_model
from hubert_fix.optimize import TOLERANCES
from hubert_fix.passes import DEFAULT_PASSES
from hubert_fix.reports import format_report, format_validation
from hubert_fix.validation import Tolerance, validate

log = logging.getLogger("hubert_fix")

DEMO_CHECKPOINT = "hubert_base_tiny.pt"
EXIT_SIGPIPE = 141  # the shell's code for a process ended by SIGPIPE


class Console:
    """Where output goes: reports to stdout; progress to stderr only on a terminal, each
    line overwriting the one before (cleared before anything else is printed)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.json = getattr(args, "json", False)
        self.show_progress = not args.quiet and sys.stderr.isatty()
        self._pending = False  # a progress line is on the terminal, without its newline

    def progress(self, message: str) -> None:
        if self.show_progress:
            print(f"\r\033[Khubert-fix: {message}", end="", file=sys.stderr, flush=True)
            self._pending = True

    def done(self) -> None:
        """Clear the progress line (before a report, an error or the closing verdict)."""
        if self._pending:
            print("\r\033[K", end="", file=sys.stderr, flush=True)
            self._pending = False

    def out(self, text: str = "") -> None:
        self.done()
        print(text, flush=True)


def emit(console: Console, payload: dict[str, object], human: str) -> None:
    console.out(json.dumps(payload, indent=2, sort_keys=True) if console.json else human)


# ---------------------------------------------------------------- commands


def cmd_check(args: argparse.Namespace, console: Console) -> int:
    report = api.check(args.model, skip=args.skip)
    edits = len(report.edits)
    if report.blocking:
        status = f"{edits} repairable, {report.blocking} unrepairable problem(s): repair would refuse (see declined)"
    elif edits:
        status = f"{edits} repairable problem(s): run hubert-fix repair {args.model} -o OUT.onnx"
    else:
        status = "nothing to repair"
    emit(console, {**report.to_dict(), "status": status}, f"{args.model}: {status}\n{format_report(report)}".rstrip())
    return EXIT_UNREPAIRABLE if report.blocking else EXIT_FOUND if edits else EXIT_OK


def cmd_repair(args: argparse.Namespace, console: Console) -> int:
    if args.output is None and not args.in_place:
        raise UnusableInputError(f"{args.model}: give -o OUT.onnx, or --in-place to replace the model")
    if args.in_place and args.output is not None and os.path.abspath(args.output) != os.path.abspath(args.model):
        raise UnusableInputError(f"{args.model}: --in-place replaces MODEL, -o {args.output} names another file: give one of them")
    out = args.output if args.output is not None else args.model
    report = api.repair(args.model, out, skip=args.skip, in_place=args.in_place)
    status = f"{len(report.edits)} edit(s), wrote {out}"
    payload = {**report.to_dict(), "output": str(out), "status": status}
    emit(console, payload, f"{args.model}: {status}\n{format_report(report)}".rstrip())
    return EXIT_OK


def cmd_validate(args: argparse.Namespace, console: Console) -> int:
    if args.checkpoint:
        console.progress("importing torch and fairseq (a few seconds)")
    report = api.validate(
        args.model, checkpoint=args.checkpoint, reference=args.reference, device=args.device, quick=args.quick,
        roles=parse_roles(args.input), output_layer=args.output_layer, final_proj=args.final_proj or None,
        trust_checkpoint=args.trust_checkpoint, dict_dir=args.dict_dir, junit_xml=args.junit_xml, progress=console.progress,
    )  # fmt: skip
    emit(console, report.to_dict(), format_validation(report))
    return EXIT_OK if report.ok else EXIT_FOUND


def cmd_export(args: argparse.Namespace, console: Console) -> int:
    reads = read_files(files=[args.checkpoint], dict_dir=args.dict_dir)
    for target in (args.output, data_path(args.output)):  # torch writes OUT.data for a model over 2 GB
        check_output_path(target, reads=reads)
    console.progress("importing torch and fairseq (a few seconds)")
    export = export_module()
    console.progress(f"loading {args.checkpoint}")
    checkpoint = export.load_checkpoint(args.checkpoint, trust=args.trust_checkpoint, dict_dir=args.dict_dir)
    payload: dict[str, object] = {"checkpoint": str(args.checkpoint), "output": str(args.output), "raw": args.raw}
    human = []
    # Files all the way (weights never in memory): a model over 2 GB is written by torch
    # with external data, and OUT then gets its weights in OUT.data.
    with tempfile.TemporaryDirectory(dir=args.output.parent, prefix=f".{args.output.name}.") as tmp:
        what = "the CTC logits" if hasattr(checkpoint, "_hubert_fix_ctc") else "extract_features"
        console.progress(f"exporting {what} (opset {args.opset}, {'fp16' if args.fp16 else 'fp32'}, {args.device})")
        model = export.export_model(
            checkpoint, Path(tmp) / "raw.onnx", opset=args.opset, output_layer=args.output_layer, fp16=args.fp16,
            device=args.device, final_proj=args.final_proj,
        )
        if not args.raw:
            console.progress("repairing")
            _, report = runner.repair(model.proto, str(args.output))
            payload["repair"] = report.to_dict()
            human.append(f"repair: {len(report.edits)} edit(s)\n{format_report(report)}".rstrip())
            staged = Path(tmp) / "repaired.onnx"  # what ORT validates; OUT is written from the same skeleton
            save_model(model, staged)
            console.progress("validating")
            validation = validate(
                model.proto, str(args.output), device="cuda" if args.device == "cuda" else "auto",
                reference=pytorch_reference(
                    checkpoint, output_layer=args.output_layer, fp16=args.fp16, device=args.device, final_proj=args.final_proj
                ),
                progress=console.progress, path=staged,
            )
            payload["validation"] = validation.to_dict()
            human.append(format_validation(validation))
            if not validation.ok:
                payload["status"] = "validation failed; nothing written"
                emit(console, payload, "\n".join(human + ["validation failed; nothing written"]))
                return EXIT_FOUND
        save_model(model, args.output)
    payload["status"] = f"wrote {args.output}"
    emit(console, payload, "\n".join(human + [f"wrote {args.output}{' (raw, unrepaired)' if args.raw else ''}"]))
    return EXIT_OK


def parse_tolerance(pairs: list[str], default: Tolerance) -> Tolerance:
    """``NAME=VALUE`` overrides of a tolerance's bounds (UnusableInputError on a bad one)."""
    names = {f.name for f in dataclasses.fields(Tolerance)}
    changes: dict[str, float] = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        try:
            if key not in names:
                raise ValueError
            changes[key] = float(value)
        except ValueError:
            raise UnusableInputError(f"--tolerance {pair!r}: expected NAME=NUMBER with NAME one of {', '.join(sorted(names))}") from None
    return dataclasses.replace(default, **changes)


def cmd_optimize(args: argparse.Namespace, console: Console) -> int:
    precision = "int8" if args.int8 else "fp16" if args.fp16 else "fp32"
    tolerance = parse_tolerance(args.tolerance, TOLERANCES[precision]) if args.tolerance else None
    if args.checkpoint:
        console.progress("importing torch and fairseq (a few seconds)")
    report = api.optimize(
        args.model, args.output, precision=precision, checkpoint=args.checkpoint, tolerance=tolerance,
        device=args.device, quick=args.quick, trust_checkpoint=args.trust_checkpoint, dict_dir=args.dict_dir,
        progress=console.progress,
    )  # fmt: skip
    human = [f"optimize {args.model} ({precision}): " + ", ".join(f"{s.name} x{s.count}" for s in report.steps)]
    human += [format_validation(v) for v in (report.validation, report.checkpoint_validation) if v is not None]
    if report.ok:
        size = f"{report.output_bytes / 1e6:.1f} MB, {report.output_bytes / report.input_bytes:.2f}x the input's {report.input_bytes / 1e6:.1f} MB"
        status = f"wrote {args.output} ({size}; rewrite {report.rewrite_seconds:.1f} s, validation {report.validate_seconds:.1f} s)"
    else:
        status = f"{precision} candidate missed its tolerance; nothing written"
    emit(console, {**report.to_dict(), "status": status}, "\n".join([*human, status]))
    return EXIT_OK if report.ok else EXIT_FOUND


def cmd_passes(args: argparse.Namespace, console: Console) -> int:
    # the docstrings' reST ``literal`` as 'literal' on a terminal
    rows = [
        {"name": p.name, "summary": re.sub(r"``(.+?)``", r"'\1'", (type(p).__doc__ or "").strip().splitlines()[0])}
        for p in DEFAULT_PASSES
    ]
    emit(console, {"passes": rows}, "\n".join(f"{r['name']:<18} {r['summary']}" for r in rows))
    return EXIT_OK


def cmd_demo(args: argparse.Namespace, console: Console) -> int:
    from hubert_fix.demo import run_demo

    with resources.as_file(resources.files("hubert_fix.fixtures") / DEMO_CHECKPOINT) as checkpoint:
        return run_demo(checkpoint, args.out_dir, console)


# ---------------------------------------------------------------- parser


def _options(*, top: bool) -> argparse.ArgumentParser:
    """-q/-v, accepted before the command and after it. After it they only add to what
    came before (their default is "not given"), so ``hubert-fix -v check M`` and
    ``hubert-fix check -v M`` both log."""
    options = argparse.ArgumentParser(add_help=False)
    default: dict[str, object] = {"default": False} if top else {"default": argparse.SUPPRESS}
    options.add_argument(
        "-q", "--quiet", action="store_true",
        help="no progress line and no closing PASSED/FAILED line on stderr (both appear only on a terminal; reports "
        "and errors are printed either way)", **default,
    )  # fmt: skip
    options.add_argument("-v", "--verbose", action="store_true", help="log details to stderr", **default)
    return options


MODEL_HELP = "the ONNX model (a file; its external data files, if any, beside it)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hubert-fix",
        description="Repair ONNX exports of fairseq speech encoders (HuBERT, wav2vec 2.0, ...) and of other "
        "exporters' speech models with the same defects.",
        epilog=__doc__.split("\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[_options(top=True)],
    )
    parser.add_argument("--version", action="version", version=f"hubert-fix {__version__}")
    common = _options(top=False)
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    skip = argparse.ArgumentParser(add_help=False)
    skip.add_argument("--skip", action="append", default=[], metavar="PASS", help="leave out a pass (see: hubert-fix passes)")
    trust = argparse.ArgumentParser(add_help=False)
    trust.add_argument(
        "--trust-checkpoint", action="store_true",
        help="unpickle the checkpoint without torch's weights_only allowlist (only for files you trust)",
    )
    trust.add_argument(
        "--dict-dir", type=Path, default=None, metavar="DIR",
        help="a CTC fine-tune that does not carry its vocabulary: the folder holding its dict.ltr.txt",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, summary: str, description: str, parents: list[argparse.ArgumentParser]) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common, *parents], help=summary, description=f"{summary}. {description}")

    p = command(
        "check", "find problems and prove their repair would load; writes nothing",
        "Exit 0: nothing to repair; 1: repairable problems found (run repair); 2: unusable input; 3: a problem no "
        "pass can repair, or a repair that would not load (repair would refuse); 4: internal error.",
        [as_json, skip],
    )
    p.add_argument("model", type=Path, metavar="MODEL.onnx", help=MODEL_HELP)
    p.set_defaults(func=cmd_check)

    p = command(
        "repair", "write a repaired copy of MODEL",
        "OUT is written atomically and only once the repair is verified. Exit 0: written; 2: unusable input or "
        "output; 3: a problem no pass can repair (nothing written).",
        [as_json, skip],
    )
    p.add_argument("model", type=Path, metavar="MODEL.onnx", help=MODEL_HELP)
    p.add_argument("-o", "--output", type=Path, metavar="OUT.onnx", help="where to write the repaired model (not MODEL)")
    p.add_argument("--in-place", action="store_true", help="replace MODEL itself (-o may be left out); only once verified")
    p.set_defaults(func=cmd_repair)

    p = command(
        "export", "export a fairseq checkpoint as-is, repair, validate",
        "Needs the [export] extra (torch, fairseq). Exit 0: written; 1: validation failed (nothing written); "
        "2: unusable input, device or missing extra; 3: unrepairable.",
        [as_json, trust],
    )
    p.add_argument(
        "checkpoint", type=Path, metavar="CHECKPOINT.pt",
        help="a fairseq checkpoint (HuBERT, wav2vec 2.0, ...; or a wav2vec_ctc/hubert_ctc fine-tune: logits are exported)",
    )
    p.add_argument("-o", "--output", type=Path, required=True, metavar="OUT.onnx", help="where to write the model")
    p.add_argument("--output-layer", type=int, default=None, metavar="N", help="1-based transformer layer (default: last)")
    p.add_argument(
        "--opset", type=int, default=17, metavar="N",
        help="ONNX opset, 11 to 20 (default 17; the encoder needs dynamic Slice inputs, from 11)",
    )
    p.add_argument("--fp16", action="store_true", help="half precision (model.half(); traced on --device, CPU works)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="device to trace on (default cpu)")
    p.add_argument("--raw", action="store_true", help="write the unrepaired export, skip repair and validation")
    p.add_argument(
        "--final-proj", action="store_true",
        help="apply the model's final_proj after the features (ContentVec as RVC v1 / so-vits-svc 4.0 use it)",
    )
    p.set_defaults(func=cmd_export)

    p = command(
        "validate", "run the model on ONNX Runtime over the cases its interface admits",
        "Also the static check and batch consistency. Without --checkpoint or --reference a case can only show "
        "that it ran (RAN), not that its numbers are right. Exit 0: all checks pass; 1: a check failed; "
        "2: unusable input or device.",
        [as_json, trust],
    )
    p.add_argument("model", type=Path, metavar="MODEL.onnx", help=MODEL_HELP)
    source = p.add_mutually_exclusive_group()
    source.add_argument("--checkpoint", type=Path, metavar="CKPT", help="compare with fairseq's PyTorch output")
    source.add_argument("--reference", type=Path, metavar="CASES.npz", help="compare with stored inputs/outputs")
    p.add_argument("--output-layer", type=int, default=None, metavar="N", help="with --checkpoint (default: from metadata)")
    p.add_argument("--final-proj", action="store_true", help="with --checkpoint: the model ends in final_proj (default: from metadata)")
    p.add_argument(
        "--device", choices=["auto", "cpu", "cuda"], default="auto",
        help="where ONNX Runtime runs: cuda only if CUDAExecutionProvider really runs (else exit 2); auto: CUDA "
        "where it works, else CPU (default)",
    )
    p.add_argument("--quick", action="store_true", help="leave out the 10 s input")
    p.add_argument(
        "--input", action="append", default=[], metavar="NAME=ROLE",
        help=f"say what an input is ({', '.join(ROLES)}: padding_mask True = pad, attention_mask 1 = real sample, lengths: real samples per utterance); "
        "found by dtype and rank otherwise",
    )
    p.add_argument("--junit-xml", type=Path, default=None, metavar="FILE", help="also write a JUnit XML report (one testcase per check)")
    p.set_defaults(func=cmd_validate)

    p = command(
        "optimize", "write a faster copy of MODEL for deployment, validated before it is written",
        "Always the fp32 rewrites that measured faster; --int8: int8 weights for CPU; --fp16: float16 for GPUs "
        "(inputs and outputs stay float32). The candidate is compared with MODEL's own outputs (and fairseq's "
        "with --checkpoint) over the matrix within the precision's tolerance. Exit 0: written; 1: the candidate "
        "missed its tolerance (nothing written); 2: unusable input or output; 3: MODEL needs repair first.",
        [as_json, trust],
    )
    p.add_argument("model", type=Path, metavar="MODEL.onnx", help=MODEL_HELP + "; repaired (check finds nothing)")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="OUT.onnx", help="where to write the optimized model")
    precision = p.add_mutually_exclusive_group()
    precision.add_argument("--int8", action="store_true", help="int8 weights and dynamically quantized MatMuls (CPU)")
    precision.add_argument("--fp16", action="store_true", help="float16 compute, normalizations in float32 (GPU)")
    p.add_argument("--checkpoint", type=Path, metavar="CKPT", help="also compare with fairseq's PyTorch output")
    p.add_argument(
        "--device", choices=["auto", "cpu", "cuda"], default="auto",
        help="where the candidate is validated (int8: always cpu; default auto: CUDA where it really runs)",
    )
    p.add_argument("--quick", action="store_true", help="leave out the 10 s input")
    p.add_argument(
        "--tolerance", action="append", default=[], metavar="NAME=VALUE",
        help=f"override one bound of the precision's tolerance ({', '.join(f.name for f in dataclasses.fields(Tolerance))})",
    )
    p.set_defaults(func=cmd_optimize)

    p = command(
        "demo", "the whole job on the embedded tiny HuBERT checkpoint",
        "Every step is printed as the command that does it. Needs the [export] extra.", [],
    )
    p.add_argument("--out-dir", type=Path, default=Path("hubert-fix-demo"), metavar="DIR", help="default ./hubert-fix-demo")
    p.set_defaults(func=cmd_demo)

    p = command("passes", "list the rewrite passes, in the order they run", "Names for --skip.", [as_json])
    p.set_defaults(func=cmd_passes)
    return parser


def _subject(args: argparse.Namespace) -> str:
    """The file a command works on, for the internal-error line."""
    for key in ("model", "checkpoint", "out_dir"):
        if getattr(args, key, None) is not None:
            return str(getattr(args, key))
    return "(no file)"


def _internal_report(args: argparse.Namespace, exc: Exception) -> str:
    """Write the traceback (and versions) to a report file; the rest of the error line."""
    import platform
    import traceback

    summary = f"{type(exc).__name__}: {one_line(exc, 160)}"
    text = (
        f"hubert-fix {__version__} {args.command} {_subject(args)}\n"
        f"python {platform.python_version()} on {platform.platform()}\n\n"
        + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    )
    try:
        fd, where = tempfile.mkstemp(prefix="hubert-fix-internal-error-", suffix=".txt")
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
    except OSError as err:
        return f"{summary} (no report written: {err.strerror}); not a verdict on the model; please report this bug"
    return f"{summary}; traceback in {where}; not a verdict on the model; please report this bug"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO if args.verbose else logging.WARNING,
        format="hubert-fix: %(levelname)s: %(message)s",
    )
    G_LOGGER.severity = G_LOGGER.WARNING if args.verbose else G_LOGGER.ERROR  # its warnings are not ours to print
    console = Console(args)
    start = time.perf_counter()
    try:
        code = args.func(args, console)
    except HubertFixError as exc:
        if isinstance(exc.report, runner.Report):  # what was found before giving up
            payload = {**exc.report.to_dict(), "error": str(exc), "exit_code": exc.exit_code}
            emit(console, payload, f"not repaired:\n{format_report(exc.report)}")
        elif console.json:  # a pipeline that keeps the JSON gets the reason there too
            console.out(json.dumps({"error": str(exc), "exit_code": exc.exit_code}, indent=2, sort_keys=True))
        console.done()
        print(f"hubert-fix {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        console.done()
        print(f"hubert-fix {args.command}: interrupted; nothing written", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader of stdout went away (`| head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_SIGPIPE
    except Exception as exc:  # a failure the code did not anticipate: never read as a verdict (0 or 1)
        console.done()
        line = f"hubert-fix {args.command}: internal error on {_subject(args)}: {_internal_report(args, exc)}"
        if console.json:
            console.out(json.dumps({"error": line, "exit_code": EXIT_INTERNAL}, indent=2, sort_keys=True))
        print(line, file=sys.stderr)
        return EXIT_INTERNAL
    console.done()
    if console.show_progress:
        verdict = "PASSED" if code == EXIT_OK else "FOUND" if args.command == "check" else "FAILED"
        print(f"{verdict} | {time.perf_counter() - start:.1f}s | hubert-fix {args.command}", file=sys.stderr)
    return code
