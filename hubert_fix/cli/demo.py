"""``hubert-fix demo``: the whole job on the embedded tiny HuBERT checkpoint.

Export as-is, show how ONNX Runtime fails on the raw export (and where it silently
computes garbage), check, repair, validate against fairseq's PyTorch output, summarise.
Everything it writes goes to one folder (default ``./hubert-fix-demo``), the checkpoint
included, and each step is printed as the command that does the same, ready to copy.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
from importlib import resources
from pathlib import Path

from hubert_fix import api
from hubert_fix.cli.console import Console
from hubert_fix.cli.reports import format_report, format_validation
from hubert_fix.cli.tool import Tool
from hubert_fix.errors import EXIT_FOUND, EXIT_OK, UnusableInputError, one_line
from hubert_fix.exporter import require
from hubert_fix.onnxio.outputs import check_output_path
from hubert_fix.onnxio.writing import write_bytes
from hubert_fix.validation.report import ValidationReport

#: The embedded default checkpoint, shipped in this package (a link to fixtures/hubert_base_tiny.pt).
DEMO_CHECKPOINT = "hubert_base_tiny.pt"


class Demo(Tool):
    """the whole job on the embedded tiny HuBERT checkpoint

    Every step is printed as the command that does it. Needs the [export] extra.
    """

    name = "demo"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--out-dir", type=Path, default=Path("hubert-fix-demo"), metavar="DIR", help="default ./hubert-fix-demo"
        )

    def run(self, args: argparse.Namespace, console: Console) -> int:
        with resources.as_file(resources.files("hubert_fix.cli") / DEMO_CHECKPOINT) as checkpoint:
            return run_demo(checkpoint, args.out_dir, console)


def _command(*words: object) -> str:
    return "$ " + shlex.join(str(w) for w in words)


def run_demo(checkpoint: Path, out_dir: Path, console: Console) -> int:
    """The job as the printed commands do it: each step is the API call behind its command."""
    require()  # a missing [export] extra, before anything is printed or written
    local = out_dir / checkpoint.name  # so that every printed command works from here
    raw_path = out_dir / "hubert_base_tiny.raw.onnx"
    repaired_path = out_dir / "hubert_base_tiny.onnx"
    if out_dir.is_dir():  # it may be the folder of the embedded checkpoint itself (an editable install)
        for target in (local, raw_path, repaired_path, out_dir / "report.json"):
            check_output_path(target, reads=[checkpoint])
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(checkpoint, local)
    except OSError as exc:
        raise UnusableInputError(f"{out_dir}: cannot create the demo folder: {one_line(exc.strerror or exc)}") from None

    console.out(f"1. export {local.name} as-is (TorchScript exporter, opset 17)")
    console.out(f"   {_command('hubert-fix', 'export', local, '-o', raw_path, '--raw')}")
    api.export(local, raw_path, raw=True, progress=console.progress)
    console.out(f"   wrote {raw_path}")

    console.out("2. run the raw export on ONNX Runtime against fairseq in PyTorch")
    console.out(f"   {_command('hubert-fix', 'validate', raw_path, '--checkpoint', local)}")
    raw_report = api.validate(raw_path, checkpoint=local, device="cpu", progress=console.progress)
    console.out(_indent(format_validation(raw_report)))

    console.out("3. find what to repair")
    console.out(f"   {_command('hubert-fix', 'check', raw_path)}")
    console.out(_indent(format_report(api.check(raw_path))))

    console.out("4. repair")
    console.out(f"   {_command('hubert-fix', 'repair', raw_path, '-o', repaired_path)}")
    report = api.repair(raw_path, repaired_path)
    console.out(f"   {len(report.edits)} edit(s), wrote {repaired_path}")

    console.out("5. validate the repaired model against fairseq in PyTorch")
    console.out(f"   {_command('hubert-fix', 'validate', repaired_path, '--checkpoint', local)}")
    fixed_report = api.validate(repaired_path, checkpoint=local, progress=console.progress)
    console.out(_indent(format_validation(fixed_report)))
    summary = {"raw": raw_report.to_dict(), "repair": report.to_dict(), "repaired": fixed_report.to_dict()}
    write_bytes(out_dir / "report.json", json.dumps(summary, indent=2).encode())
    console.out("summary")
    console.out(f"   raw export:      {_tally(raw_report)}")
    console.out(f"   repaired export: {_tally(fixed_report)} ({len(report.edits)} edit(s), on {fixed_report.provider})")
    console.out(f"   files in {out_dir}/ (report.json has every figure)")
    return EXIT_OK if fixed_report.ok else EXIT_FOUND


def _tally(report: ValidationReport) -> str:
    cases = [c for c in report.cases if c.kind == "case"]
    worst = max((c.max_abs_diff for c in cases if c.max_abs_diff is not None), default=None)
    diff = f", worst max abs diff {worst:.2e}" if worst is not None else ""
    checks = "; ".join(f"{c.kind}: {c.status}" for c in report.cases if c.kind != "case")
    return f"{sum(c.ok for c in cases)}/{len(cases)} cases pass{diff}" + (f"; {checks}" if checks else "")


def _indent(text: str) -> str:
    return "\n".join(f"   {line}" for line in text.splitlines())
