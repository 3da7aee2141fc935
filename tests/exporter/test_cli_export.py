"""``hubert-fix export``, ``validate --checkpoint`` and ``demo``.

Through the console script where that is what is tested (a fresh process: what it prints on
stderr, the demo as a user runs it); in this process otherwise (``run_in_process``: the same
answers, without importing torch and fairseq again for each call). These need the [export]
extra (torch + fairseq) and skip cleanly without it.
"""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
from catalog import CHECKPOINTS
from conftest import CHECKPOINT, FIXTURES, run_in_process, run_main

pytest.importorskip("torch")
pytest.importorskip("fairseq")
pytestmark = pytest.mark.export


def test_export_repairs_and_validates(cli, tmp_path: Path) -> None:
    out = tmp_path / "hubert.onnx"
    result = cli("export", CHECKPOINT, "-o", out, "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["repair"]["edits"] == 2
    assert report["validation"]["ok"] and report["validation"]["reference"] == "checkpoint"
    assert len([c for c in report["validation"]["cases"] if c["kind"] == "case"]) == 11
    model = onnx.load(str(out))
    assert [i.name for i in model.graph.input] == ["source", "padding_mask"]
    assert cli("check", out).returncode == 0


def test_export_raw_writes_the_broken_graph_and_validate_checkpoint_sees_it(tmp_path: Path) -> None:
    raw = tmp_path / "raw.onnx"
    assert run_in_process("export", CHECKPOINT, "-o", raw, "--raw", "--output-layer", "1").returncode == 0
    meta = {p.key: p.value for p in onnx.load(str(raw)).metadata_props}
    assert meta["hubert_fix.output_layer"] == "1" and "hubert_fix.repair" not in meta
    assert run_in_process("check", raw).returncode == 1
    assert run_in_process("validate", raw, "--checkpoint", CHECKPOINT, "--quick", "--device", "cpu").returncode == 1
    fixed = tmp_path / "fixed.onnx"
    assert run_in_process("repair", raw, "-o", fixed).returncode == 0
    # The layer comes from the model's metadata: layer 1, not the last layer.
    result = run_in_process("validate", fixed, "--checkpoint", CHECKPOINT, "--quick", "--device", "cpu", "--json")
    assert result.returncode == 0, result.stdout
    assert json.loads(result.stdout)["ok"]
    wrong_layer = run_in_process(
        "validate", fixed, "--checkpoint", CHECKPOINT, "--quick", "--output-layer", "2", "--device", "cpu"
    )
    assert wrong_layer.returncode == 2 and "2 transformer layers vs the model's 1" in wrong_layer.stderr  # it has 1


def test_cuda_without_cuda_is_one_clear_line(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    out = tmp_path / "half.onnx"
    result = run_in_process("export", CHECKPOINT, "-o", out, "--fp16", "--device", "cuda")
    assert result.returncode == 2 and not out.exists()
    assert len(result.stderr.strip().splitlines()) == 1 and "--device cuda needs a CUDA GPU" in result.stderr


def test_fp16_export_on_cpu_validates_at_fp16_tolerance(tmp_path: Path) -> None:
    out = tmp_path / "half.onnx"
    result = run_in_process("export", CHECKPOINT, "-o", out, "--fp16", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["repair"]["edits"] == 2
    validation = report["validation"]
    assert validation["precision"] == "fp16" and validation["ok"]
    assert len([c for c in validation["cases"] if c["kind"] == "case"]) == 11
    assert validation["tolerance"]["max_abs_diff"] == 5e-2
    assert onnx.load(str(out)).graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16


@pytest.mark.parametrize("content", [b"", b"not a checkpoint", b"PK\x03\x04garbage"], ids=["empty", "text", "bad zip"])
def test_bad_checkpoint_is_one_clear_line(tmp_path: Path, content: bytes) -> None:
    checkpoint = tmp_path / "bad.pt"
    checkpoint.write_bytes(content)
    out = tmp_path / "out.onnx"
    result = run_in_process("export", checkpoint, "-o", out)
    assert result.returncode == 2 and not out.exists()
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(checkpoint) in lines[0] and "Traceback" not in result.stderr


def test_demo_runs_with_no_arguments(cli, tmp_path: Path) -> None:
    result = cli("demo", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "raw export:      1/11 cases pass" in result.stdout and "batch consistency: FAIL" in result.stdout
    assert "repaired export: 11/11 cases pass" in result.stdout and "batch consistency: PASS" in result.stdout
    report = json.loads((tmp_path / "hubert-fix-demo" / "report.json").read_text())
    assert report["repaired"]["ok"] and not report["raw"]["ok"]


def test_contentvec_middle_layer_with_final_proj(tmp_path: Path) -> None:
    out = tmp_path / "contentvec.onnx"
    checkpoint = FIXTURES / "contentvec_tiny.pt"
    result = run_in_process("export", checkpoint, "-o", out, "--output-layer", "1", "--final-proj", "--json")
    assert result.returncode == 0, result.stderr
    validation = json.loads(result.stdout)["validation"]
    assert validation["ok"] and {tuple(c["shape"][2:]) for c in validation["cases"] if c["shape"]} == {
        (16,)
    }  # final_dim
    again = run_in_process("validate", out, "--checkpoint", checkpoint, "--quick", "--device", "cpu")
    assert again.returncode == 0, again.stdout  # layer and final_proj come from the metadata


def test_export_that_fails_validation_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from conftest import run_main

    from hubert_fix import runner

    real_repair = runner.repair
    # Repairing only the Where leaves the frozen slice: the samples % frames == 0 cases fail.
    monkeypatch.setattr(runner, "repair", lambda model, name: real_repair(model, name, skip=["frozen-slice"]))
    out = tmp_path / "half-fixed.onnx"
    code, stdout, _ = run_main("export", CHECKPOINT, "-o", out, "--json")
    report = json.loads(stdout)
    assert code == 1 and report["status"] == "validation failed; nothing written"
    from hubert_fix.analysis.convstack import frames
    from hubert_fix.exporter.loading import load_checkpoint
    from hubert_fix.exporter.modules import conv_stack

    stack = conv_stack(load_checkpoint(CHECKPOINT))
    cases = report["validation"]["cases"]
    failed = [c["name"] for c in cases if not c["ok"]]
    assert failed and failed == [c["name"] for c in cases if c["samples"] % frames(c["samples"], stack) == 0]
    assert list(tmp_path.iterdir()) == []  # no OUT, no temporary folder left behind


@pytest.mark.parametrize("name", [n for n in CHECKPOINTS if n != "hubert_base_tiny"])
def test_export_of_every_architecture(cli, tmp_path: Path, name: str) -> None:
    """HuBERT large, ContentVec, wav2vec 2.0 (also the old args-style layout), data2vec-audio."""
    out = tmp_path / f"{name}.onnx"
    result = cli("export", FIXTURES / CHECKPOINTS[name].file, "-o", out, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["repair"]["edits"] >= 1 and report["validation"]["ok"]
    assert len([c for c in report["validation"]["cases"] if c["kind"] == "case"]) == 11
    assert not result.stderr.strip()  # fairseq's and Hydra's chatter stays out of a pipeline's stderr


@pytest.mark.parametrize("opset", [9, 10])
def test_opsets_the_encoder_cannot_use_are_one_line(tmp_path: Path, opset: int) -> None:
    out = tmp_path / "x.onnx"
    result = run_in_process("export", CHECKPOINT, "-o", out, "--opset", opset)
    assert result.returncode == 2 and result.stdout == "" and not out.exists()
    assert (
        result.stderr.strip()
        == f"hubert-fix export: error: --opset {opset}: the TorchScript exporter supports opsets 11..20"
    )


def test_an_exporter_failure_is_one_line_and_keeps_stdout_clean(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    import os

    import torch
    from conftest import run_main

    def failing_export(*args: object, **kwargs: object) -> None:
        os.write(1, b"Torch IR graph at exception: graph(...)\n")  # what the C++ log does
        raise RuntimeError("Unsupported: ONNX export of operator foo")

    monkeypatch.setattr(torch.onnx, "export", failing_export)
    code, stdout, err = run_main("export", CHECKPOINT, "-o", tmp_path / "x.onnx")
    assert code == 2 and stdout == "" and "torch.onnx.export failed at opset 17: Unsupported" in err
    assert "Torch IR" not in capfd.readouterr().out and list(tmp_path.iterdir()) == []


def test_verbose_export_shows_no_internal_paths(cli, tmp_path: Path) -> None:
    out = tmp_path / "v.onnx"
    result = cli("export", CHECKPOINT, "-o", out, "-v")  # a fresh process: its logging is configured by -v
    assert result.returncode == 0 and f".{out.name}." not in result.stderr


def test_a_checkpoint_of_another_model_is_named(tmp_path: Path) -> None:
    repaired = tmp_path / "w2v.onnx"
    assert run_in_process("repair", FIXTURES / "wav2vec2_base_tiny.raw.onnx", "-o", repaired).returncode == 0
    result = run_in_process("validate", repaired, "--checkpoint", CHECKPOINT, "--quick")  # HuBERT's, same sizes
    assert result.returncode == 2 and "a HubertModel vs the model's Wav2Vec2Model" in result.stderr
    stored = run_in_process(
        "validate", repaired, "--reference", FIXTURES / "hubert_base_tiny.cases.npz", "--quick"
    )  # HuBERT's cases
    assert stored.returncode == 1 and "is the reference file the one this model was exported from?" in stored.stdout
    larger = run_in_process("validate", repaired, "--checkpoint", FIXTURES / "hubert_large_tiny.pt")  # other width
    assert larger.returncode == 2 and "does not match" in larger.stderr and "encoder width 48" in larger.stderr


@pytest.mark.parametrize(
    ("model", "checkpoint", "difference"),
    [
        ("hubert_base_tiny.raw.onnx", "wav2vec2_base_ctc.pt", "it gives CTC logits, the model encoder features"),
        ("wav2vec2_base_ctc.raw.onnx", "hubert_base_tiny.pt", "it gives encoder features, the model CTC logits"),
        ("hubert_base_tiny.raw.onnx", "wav2vec2_base_tiny.pt", "a Wav2Vec2Model vs the model's HubertModel"),
        ("hubert_base_tiny.raw.onnx", "hubert_large_tiny.pt", "encoder width 48 vs the model's 32"),
    ],
)
def test_a_checkpoint_of_another_architecture_is_exit_2(
    tmp_path: Path, model: str, checkpoint: str, difference: str
) -> None:
    import hubert_fix

    repaired = tmp_path / "model.onnx"
    hubert_fix.repair(FIXTURES / model, repaired)
    code, _, err = run_main("validate", repaired, "--checkpoint", FIXTURES / checkpoint, "--quick")
    assert code == 2 and err.count("\n") == 1 and difference in err and "Warning" not in err, err


def test_a_checkpoint_deeper_than_the_model_is_exit_2(tmp_path: Path) -> None:
    """The export ends at layer 1 of 2: without its record (or --output-layer 1) the depths differ."""
    import hubert_fix

    repaired = tmp_path / "model.onnx"
    hubert_fix.repair(FIXTURES / "contentvec_tiny.layer1_final_proj.raw.onnx", repaired)
    checkpoint = FIXTURES / "contentvec_tiny.pt"
    assert run_main("validate", repaired, "--checkpoint", checkpoint, "--quick")[0] == 0
    model = onnx.load(str(repaired))
    kept = [p for p in model.metadata_props if p.key != "hubert_fix.output_layer"]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    onnx.save(model, str(repaired))
    code, _, err = run_main("validate", repaired, "--checkpoint", checkpoint, "--quick", "--final-proj")
    assert code == 2 and "2 transformer layers vs the model's 1" in err
    assert (
        run_main("validate", repaired, "--checkpoint", checkpoint, "--quick", "--final-proj", "--output-layer", "1")[0]
        == 0
    )
