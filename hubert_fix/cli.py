"""The ``hubert-fix`` command line.

Exit codes (stable; pipelines depend on them):
  0  success: nothing to repair (check), OUT written (repair, export), all checks pass (validate)
  1  check: repairable problems found; validate/export: a validation check failed
  2  unusable input: missing/damaged file, bad checkpoint, unwritable output, device not usable
  3  repair/export: problems found that no pass can repair (nothing written)
  130 interrupted (Ctrl-C; nothing written), 141 stdout closed early (e.g. piped to head)
Reports go to stdout (``--json`` for one JSON object); logs and progress go to stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path

from hubert_fix import __version__, runner
from hubert_fix.errors import EXIT_FOUND, EXIT_OK, HubertFixError
from hubert_fix.extras import export_module, pytorch_reference
from hubert_fix.interface import parse_roles
from hubert_fix.model_io import check_output_path, load_model, save_model
from hubert_fix.passes import DEFAULT_PASSES
from hubert_fix.validate import ValidationReport, load_reference_cases, validate

log = logging.getLogger("hubert_fix")

DEMO_CHECKPOINT = "hubert_base_tiny.pt"
EXIT_SIGPIPE = 141  # the shell's code for a process ended by SIGPIPE


class Console:
    """Where output goes: reports to stdout, progress to stderr only on a terminal."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.json = getattr(args, "json", False)
        self.show_progress = not args.quiet and sys.stderr.isatty()

    def progress(self, message: str) -> None:
        if self.show_progress:
            print(f"hubert-fix: {message}", file=sys.stderr, flush=True)

    def out(self, text: str = "") -> None:
        print(text, flush=True)


# ---------------------------------------------------------------- reports, human form


def format_report(report: runner.Report) -> str:
    lines = []
    verb = "made" if report.applied else "planned"
    for result in report.results:
        for edit in result.edits:
            lines += [
                f"  [{result.name}] {edit.op} {edit.node}",
                f"      problem: {edit.before}",
                f"      edit ({verb}): {edit.action}",
                f"      after:   {edit.after}",
            ]
            if edit.assumption:
                lines.append(f"      assumed: {edit.assumption}")
    declined = [(r.name, d) for r in report.results for d in r.declined]
    if declined:
        lines.append("  declined:")
        for name, d in declined:
            mark = "UNREPAIRABLE" if d.blocking else "ok"
            lines.append(f"    [{name}] {d.op} {d.node}: {mark}: {d.reason}")
    return "\n".join(lines)


def format_validation(report: ValidationReport) -> str:
    ref = {"none": "no reference", "checkpoint": "vs fairseq PyTorch", "stored": "vs stored reference"}[report.reference]
    lines = [f"validate {report.model}: provider {report.provider}, {report.precision}, {ref}"]
    if report.tolerance:
        lines.append(
            f"  tolerance: max abs diff <= {report.tolerance['max_abs_diff']:g}, cosine >= {report.tolerance['min_cosine']}"
        )
    for case in report.cases:
        detail = f"shape {case.shape}" if case.shape else ""
        if case.max_abs_diff is not None:
            detail += f"{', ' if detail else ''}max abs diff {case.max_abs_diff:.2e}"
        if case.cosine is not None:
            detail += f", cosine {case.cosine:.6f}"
        if case.status == "RAN":
            detail += f"{', ' if detail else ''}not compared"
        size = f" (batch {case.batch}, {case.samples} samples)" if case.batch else ""
        lines.append(f"  {case.status:<4}  {case.name}{size} {detail}".rstrip())
        lines += [f"        {failure}" for failure in case.failures]
    lines += [f"  SKIP  {skipped}" for skipped in report.skipped]
    lines += [f"  note: {text}" for text in report.not_checked]
    tally = {status: sum(c.status == status for c in report.cases) for status in ("PASS", "RAN", "FAIL")}
    summary = ", ".join(f"{n} {word}" for word, n in (("passed", tally["PASS"]), ("ran, not compared", tally["RAN"]),
                                                     ("failed", tally["FAIL"])) if n)  # fmt: skip
    lines.append(f"  {len(report.cases)} checks: {summary}" + (f"; {len(report.skipped)} skipped" if report.skipped else ""))
    return "\n".join(lines)


def findings(report: runner.Report) -> list[str]:
    """What ``check`` would repair or cannot repair, one line each (validate fails on any)."""
    lines = [f"[{r.name}] {e.op} {e.node}: would be repaired: {e.before}" for r in report.results for e in r.edits]
    lines += [
        f"[{r.name}] {d.op} {d.node}: unrepairable: {d.reason}" for r in report.results for d in r.declined if d.blocking
    ]
    return lines


def emit(console: Console, payload: dict[str, object], human: str) -> None:
    console.out(json.dumps(payload, indent=2, sort_keys=True) if console.json else human)


# ---------------------------------------------------------------- commands


def cmd_check(args: argparse.Namespace, console: Console) -> int:
    model = load_model(args.model)
    report = runner.check(model.proto, str(args.model), skip=args.skip)
    edits = len(report.edits)
    if report.blocking:
        status = f"{edits} repairable, {report.blocking} unrepairable problem(s)"
    elif edits:
        status = f"{edits} repairable problem(s): run hubert-fix repair {args.model} -o OUT.onnx"
    else:
        status = "nothing to repair"
    emit(console, {**report.to_dict(), "status": status}, f"{args.model}: {status}\n{format_report(report)}".rstrip())
    return EXIT_FOUND if edits or report.blocking else EXIT_OK


def cmd_repair(args: argparse.Namespace, console: Console) -> int:
    check_output_path(args.output, source=args.model, in_place=args.in_place)
    model = load_model(args.model)
    _, report = runner.repair(model.proto, str(args.model), skip=args.skip)
    save_model(model, args.output)
    status = f"{len(report.edits)} edit(s), wrote {args.output}"
    emit(console, {**report.to_dict(), "output": str(args.output), "status": status}, f"{args.model}: {status}\n{format_report(report)}".rstrip())
    return EXIT_OK


def _torch_device(device: str) -> str:
    """The PyTorch device for the reference: CUDA only when asked for and present."""
    if device == "cpu":
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def cmd_validate(args: argparse.Namespace, console: Console) -> int:
    model = load_model(args.model)
    reference = stored = None
    if args.reference:
        stored = load_reference_cases(args.reference)
    if args.checkpoint:
        checkpoint = export_module().load_checkpoint(args.checkpoint, trust=args.trust_checkpoint)
        meta = {p.key: p.value for p in model.proto.metadata_props}
        layer = args.output_layer if args.output_layer is not None else int(meta.get("hubert_fix.output_layer") or 0) or None
        fp16 = meta.get("hubert_fix.precision") == "fp16"
        device = _torch_device(args.device) if fp16 else "cpu"
        final_proj = args.final_proj or meta.get("hubert_fix.final_proj") == "1"
        reference = pytorch_reference(checkpoint, output_layer=layer, fp16=fp16, device=device, final_proj=final_proj)
    roles = parse_roles(args.input)
    report = validate(
        model.proto, str(args.model), device=args.device, reference=reference, stored=stored, quick=args.quick,
        progress=console.progress, path=args.model, findings=findings(runner.check(model.proto, str(args.model))),
        roles=roles,
    )
    emit(console, report.to_dict(), format_validation(report))
    return EXIT_OK if report.ok else EXIT_FOUND


def cmd_export(args: argparse.Namespace, console: Console) -> int:
    check_output_path(args.output, source=args.checkpoint)
    export = export_module()
    console.progress(f"loading {args.checkpoint}")
    checkpoint = export.load_checkpoint(args.checkpoint, trust=args.trust_checkpoint)
    payload: dict[str, object] = {"checkpoint": str(args.checkpoint), "output": str(args.output), "raw": args.raw}
    human = []
    # Files all the way (weights never in memory): a model over 2 GB is written by torch
    # with external data, and OUT then gets its weights in OUT.data.
    with tempfile.TemporaryDirectory(dir=args.output.parent, prefix=f".{args.output.name}.") as tmp:
        console.progress(f"exporting extract_features (opset {args.opset}, {'fp16' if args.fp16 else 'fp32'}, {args.device})")
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


def cmd_passes(args: argparse.Namespace, console: Console) -> int:
    rows = [{"name": p.name, "summary": (type(p).__doc__ or "").strip().splitlines()[0]} for p in DEFAULT_PASSES]
    emit(console, {"passes": rows}, "\n".join(f"{r['name']:<18} {r['summary']}" for r in rows))
    return EXIT_OK


def cmd_demo(args: argparse.Namespace, console: Console) -> int:
    from hubert_fix.demo import run_demo

    with resources.as_file(resources.files("hubert_fix.fixtures") / DEMO_CHECKPOINT) as checkpoint:
        return run_demo(checkpoint, args.out_dir, console)


# ---------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hubert-fix",
        description="Repair ONNX exports of fairseq speech encoders (HuBERT, wav2vec 2.0).",
        epilog=__doc__.split("\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"hubert-fix {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    common.add_argument("-v", "--verbose", action="store_true", help="log details to stderr")
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    skip = argparse.ArgumentParser(add_help=False)
    skip.add_argument("--skip", action="append", default=[], metavar="PASS", help="leave out a pass (see: hubert-fix passes)")
    trust = argparse.ArgumentParser(add_help=False)
    trust.add_argument(
        "--trust-checkpoint", action="store_true",
        help="unpickle the checkpoint without torch's weights_only allowlist (only for files you trust)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("check", parents=[common, as_json, skip], help="find problems; writes nothing")
    p.add_argument("model", type=Path, metavar="MODEL.onnx")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("repair", parents=[common, as_json, skip], help="write a repaired copy of MODEL")
    p.add_argument("model", type=Path, metavar="MODEL.onnx")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="OUT.onnx")
    p.add_argument("--in-place", action="store_true", help="allow OUT to be MODEL (replaced only once the repair is verified)")
    p.set_defaults(func=cmd_repair)

    p = sub.add_parser("export", parents=[common, as_json, trust], help="export a fairseq checkpoint, repair, validate")
    p.add_argument("checkpoint", type=Path, metavar="CHECKPOINT.pt")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="OUT.onnx")
    p.add_argument("--output-layer", type=int, default=None, metavar="N", help="1-based transformer layer (default: last)")
    p.add_argument("--opset", type=int, default=17, metavar="N", help="ONNX opset (default 17)")
    p.add_argument("--fp16", action="store_true", help="half precision (model.half(); traced on --device, CPU works)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="device to trace on (default cpu)")
    p.add_argument("--raw", action="store_true", help="write the unrepaired export, skip repair and validation")
    p.add_argument(
        "--final-proj", action="store_true",
        help="apply the model's final_proj after the features (ContentVec as RVC v1 / so-vits-svc 4.0 use it)",
    )
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("validate", parents=[common, as_json, trust], help="run the edge-length matrix on ONNX Runtime")
    p.add_argument("model", type=Path, metavar="MODEL.onnx")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--checkpoint", type=Path, metavar="CKPT", help="compare with fairseq's PyTorch output")
    source.add_argument("--reference", type=Path, metavar="CASES.npz", help="compare with stored inputs/outputs")
    p.add_argument("--output-layer", type=int, default=None, metavar="N", help="with --checkpoint (default: from metadata)")
    p.add_argument("--final-proj", action="store_true", help="with --checkpoint: the model ends in final_proj (default: from metadata)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--quick", action="store_true", help="leave out the 10 s input")
    p.add_argument(
        "--input", action="append", default=[], metavar="NAME=ROLE",
        help="say what an input is: audio, padding_mask (True = pad) or attention_mask (1 = real sample); "
        "found by dtype and rank otherwise",
    )
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("demo", parents=[common], help="the whole job on the embedded tiny HuBERT checkpoint")
    p.add_argument("--out-dir", type=Path, default=Path("hubert-fix-demo"), metavar="DIR", help="default ./hubert-fix-demo")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("passes", parents=[common, as_json], help="list the rewrite passes, in the order they run")
    p.set_defaults(func=cmd_passes)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO if args.verbose else logging.WARNING,
        format="hubert-fix: %(levelname)s: %(message)s",
    )
    console = Console(args)
    start = time.perf_counter()
    try:
        code = args.func(args, console)
    except HubertFixError as exc:
        if isinstance(exc.report, runner.Report):  # what was found before giving up
            emit(console, exc.report.to_dict(), f"not repaired:\n{format_report(exc.report)}")
        print(f"hubert-fix {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"hubert-fix {args.command}: interrupted; nothing written", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader of stdout went away (`| head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_SIGPIPE
    if console.show_progress:
        verdict = "PASSED" if code == EXIT_OK else "FOUND" if args.command == "check" else "FAILED"
        print(f"{verdict} | {time.perf_counter() - start:.1f}s | hubert-fix {args.command}", file=sys.stderr)
    return code
