"""One function per command: parsed arguments in, an exit code out."""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
from importlib import resources

from hubert_fix import api
from hubert_fix.analysis.interface import ROLES
from hubert_fix.cli.console import Console, emit
from hubert_fix.cli.reports import format_report, format_validation
from hubert_fix.errors import EXIT_FOUND, EXIT_OK, EXIT_SKIPPED, EXIT_UNREPAIRABLE, UsageError
from hubert_fix.passes import DEFAULT_PASSES
from hubert_fix.validation.report import OPTIMIZED_TOLERANCES, Tolerance

DEMO_CHECKPOINT = "hubert_base_tiny.pt"


def cmd_check(args: argparse.Namespace, console: Console) -> int:
    report = api.check(args.model, skip=args.skip)
    edits = len(report.edits)
    if report.blocking:
        status = f"{edits} repairable, {report.blocking} unrepairable problem(s): repair would refuse (see declined)"
    elif edits:
        status = f"{edits} repairable problem(s): run hubert-fix repair {args.model} -o OUT.onnx"
    elif report.skipped:
        status = "nothing found by the passes that ran; not a clean bill: --skip left passes out"
    else:
        status = "nothing to repair"
    emit(console, {**report.to_dict(), "status": status}, f"{args.model}: {status}\n{format_report(report)}".rstrip())
    if report.blocking or edits:
        return EXIT_UNREPAIRABLE if report.blocking else EXIT_FOUND
    return EXIT_SKIPPED if report.skipped else EXIT_OK


def cmd_repair(args: argparse.Namespace, console: Console) -> int:
    if args.output is None and not args.in_place:
        raise UsageError(f"{args.model}: give -o OUT.onnx, or --in-place to replace the model")
    if args.in_place and args.output is not None and os.path.abspath(args.output) != os.path.abspath(args.model):
        raise UsageError(
            f"{args.model}: --in-place replaces MODEL, -o {args.output} names another file: give one of them"
        )
    out = args.output if args.output is not None else args.model
    report = api.repair(args.model, out, skip=args.skip, in_place=args.in_place)
    status = f"{len(report.edits)} edit(s), wrote {out}"
    if report.skipped:
        status += f"; not run: {', '.join(report.skipped)} (--skip): it may still need them"
    payload = {**report.to_dict(), "output": str(out), "status": status}
    emit(console, payload, f"{args.model}: {status}\n{format_report(report)}".rstrip())
    return EXIT_SKIPPED if report.skipped else EXIT_OK


def cmd_validate(args: argparse.Namespace, console: Console) -> int:
    if args.checkpoint:
        console.progress("importing torch and fairseq (a few seconds)")
    report = api.validate(
        args.model, checkpoint=args.checkpoint, reference=args.reference, device=args.device, quick=args.quick,
        roles=parse_roles(args.input), output_layer=args.output_layer, final_proj=args.final_proj or None,
        trust_checkpoint=args.trust_checkpoint, dict_dir=args.dict_dir, junit_xml=args.junit_xml, progress=console.progress, runtime=args.runtime,
        audio=args.audio,
    )  # fmt: skip
    emit(console, report.to_dict(), format_validation(report))
    return EXIT_OK if report.ok else EXIT_FOUND


def cmd_export(args: argparse.Namespace, console: Console) -> int:
    report = api.export(
        args.checkpoint, args.output, opset=args.opset, output_layer=args.output_layer, final_proj=args.final_proj,
        fp16=args.fp16, device=args.device, raw=args.raw, trust_checkpoint=args.trust_checkpoint,
        dict_dir=args.dict_dir, progress=console.progress,
    )  # fmt: skip
    human = []
    if report.repair is not None:
        human.append(f"repair: {len(report.repair.edits)} edit(s)\n{format_report(report.repair)}".rstrip())
    if report.validation is not None:
        human.append(format_validation(report.validation))
    status = (
        f"wrote {args.output}{' (raw, unrepaired)' if args.raw else ''}"
        if report.ok
        else "validation failed; nothing written"
    )
    emit(console, {**report.to_dict(), "status": status}, "\n".join([*human, status]))
    return EXIT_OK if report.ok else EXIT_FOUND


def parse_roles(pairs: list[str]) -> dict[str, str]:
    """``--input NAME=ROLE`` values as {name: role}; UsageError on a malformed one."""
    roles: dict[str, str] = {}
    for pair in pairs:
        name, sep, role = pair.rpartition("=")
        if not sep or not name or role not in ROLES:
            raise UsageError(f"--input {pair}: expected NAME=ROLE with ROLE one of {', '.join(ROLES)}")
        roles[name] = role
    return roles


def parse_tolerance(pairs: list[str], default: Tolerance) -> Tolerance:
    """``NAME=VALUE`` overrides of a tolerance's bounds (UsageError on a bad one)."""
    names = {f.name for f in dataclasses.fields(Tolerance)}
    changes: dict[str, float] = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        try:
            if key not in names:
                raise ValueError
            changes[key] = float(value)
        except ValueError:
            raise UsageError(
                f"--tolerance {pair!r}: expected NAME=NUMBER with NAME one of {', '.join(sorted(names))}"
            ) from None
    return dataclasses.replace(default, **changes)


def cmd_optimize(args: argparse.Namespace, console: Console) -> int:
    precision = "int8" if args.int8 else "fp16" if args.fp16 else "bf16" if args.bf16 else None
    default = OPTIMIZED_TOLERANCES[precision or "fp32"]  # OpenVINO's default: bf16's, set after the CPU is asked
    if args.tolerance and precision is None and args.runtime == "openvino":
        raise UsageError("--tolerance with --runtime openvino: name the precision too (--bf16 or --int8)")
    tolerance = parse_tolerance(args.tolerance, default) if args.tolerance else None
    if args.checkpoint:
        console.progress("importing torch and fairseq (a few seconds)")
    report = api.optimize(
        args.model, args.output, precision=precision, runtime=args.runtime, calibration_audio=args.calibration_audio,
        checkpoint=args.checkpoint, tolerance=tolerance,
        device=args.device, quick=args.quick, trust_checkpoint=args.trust_checkpoint, dict_dir=args.dict_dir,
        progress=console.progress,
    )  # fmt: skip
    precision = report.precision
    human = [f"optimize {args.model} ({precision}): " + ", ".join(f"{s.name} x{s.count}" for s in report.steps)]
    human += [format_validation(v) for v in (report.validation, report.checkpoint_validation) if v is not None]
    if report.ok:
        size = f"{report.output_bytes / 1e6:.1f} MB, {report.output_bytes / report.input_bytes:.2f}x the input's {report.input_bytes / 1e6:.1f} MB"
        status = f"wrote {args.output} ({size}; rewrite {report.rewrite_seconds:.1f} s, validation {report.validate_seconds:.1f} s)"
        if report.openvino_config:
            status += f"; compile it with {report.openvino_config} to compute as validated"
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
    from hubert_fix.cli.demo import run_demo

    with resources.as_file(resources.files("hubert_fix.cli") / DEMO_CHECKPOINT) as checkpoint:
        return run_demo(checkpoint, args.out_dir, console)
