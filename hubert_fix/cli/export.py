"""``hubert-fix export``."""

from __future__ import annotations

import argparse
from pathlib import Path

from hubert_fix import api
from hubert_fix.cli.console import Console, emit
from hubert_fix.cli.reports import format_report, format_validation
from hubert_fix.cli.tool import Tool, add_checkpoint_loading, add_json, checkpoint
from hubert_fix.errors import EXIT_FOUND, EXIT_OK


class Export(Tool):
    """export a fairseq checkpoint as-is, repair, validate

    Needs the [export] extra (torch, fairseq).
    """

    name = "export"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_json(parser)
        add_checkpoint_loading(parser)
        parser.add_argument(
            "checkpoint",
            type=Path,
            metavar="CHECKPOINT.pt",
            help="a fairseq checkpoint (HuBERT, wav2vec 2.0, ...; or a wav2vec_ctc/hubert_ctc fine-tune: logits are exported)",
        )
        parser.add_argument(
            "-o", "--output", type=Path, required=True, metavar="OUT.onnx", help="where to write the model"
        )
        parser.add_argument(
            "--output-layer", type=int, default=None, metavar="N", help="1-based transformer layer (default: last)"
        )
        parser.add_argument(
            "--opset",
            type=int,
            default=17,
            metavar="N",
            help="ONNX opset, 11 to 20 (default 17; the encoder needs dynamic Slice inputs, from 11)",
        )
        parser.add_argument(
            "--fp16", action="store_true", help="half precision (model.half(); traced on --device, CPU works)"
        )
        parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="device to trace on (default cpu)")
        parser.add_argument(
            "--raw", action="store_true", help="write the unrepaired export, skip repair and validation"
        )
        parser.add_argument(
            "--final-proj",
            action="store_true",
            help="apply the model's final_proj after the features (ContentVec as RVC v1 / so-vits-svc 4.0 use it)",
        )

    def run(self, args: argparse.Namespace, console: Console) -> int:
        report = api.export(
            checkpoint(args), args.output, opset=args.opset, fp16=args.fp16, device=args.device, raw=args.raw,
            progress=console.progress,
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
