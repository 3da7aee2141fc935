"""The export path: loading fairseq checkpoints, the one tracing shim, the raw export.

Needs the [export] extra (torch + fairseq); skipped cleanly without it. Runs on the
tiny fixture checkpoint (fixtures/make_fixtures.py), which exports in a few seconds.
"""

from __future__ import annotations

import datetime
import importlib
import json
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("fairseq")

import onnxruntime as ort  # noqa: E402

from hubert_fix.analysis.convstack import frames, min_samples, mod_zero_samples  # noqa: E402
from hubert_fix.errors import DeviceUnavailableError, HubertFixError, UnusableInputError  # noqa: E402
from hubert_fix.exporter import loading, modules, trace  # noqa: E402
from hubert_fix.validation.matrix import Case, cases  # noqa: E402

pytestmark = pytest.mark.export

from conftest import CASES, CHECKPOINT, FIXTURES, RAW_BY_OPSET, run_main  # noqa: E402
from conftest import RAW as RAW_ONNX  # noqa: E402


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return loading.load_checkpoint(CHECKPOINT)


@pytest.fixture(scope="module")
def raw(model: torch.nn.Module) -> onnx.ModelProto:
    return trace.export_raw(model)


def _signature(proto: onnx.ModelProto) -> list[tuple[str, int, list[object]]]:
    """(name, element type, dims) of every graph input and output."""
    rows = []
    for value in [*proto.graph.input, *proto.graph.output]:
        tensor = value.type.tensor_type
        rows.append((value.name, tensor.elem_type, [d.dim_param or d.dim_value for d in tensor.shape.dim]))
    return rows


def _session(proto: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 4  # the expected failures would print C++ error lines
    return ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])


# ---------------------------------------------------------------- load_checkpoint


def test_load_fixture(model: torch.nn.Module) -> None:
    assert type(model).__name__ == "HubertModel"
    assert not model.training
    assert modules.conv_stack(model) == ((10, 5), (3, 2), (3, 2), (3, 2), (3, 2), (2, 2), (2, 2))
    assert modules.embed_dim(model) == 32


def test_load_works_without_label_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """task_state carries the dictionaries: no label folder, from any working directory."""
    monkeypatch.chdir(tmp_path)
    assert type(loading.load_checkpoint(CHECKPOINT)).__name__ == "HubertModel"


def test_load_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.pt"
    with pytest.raises(UnusableInputError, match="no such file") as info:
        loading.load_checkpoint(path)
    assert str(path) in str(info.value)


def test_load_directory(tmp_path: Path) -> None:
    with pytest.raises(UnusableInputError, match="directory"):
        loading.load_checkpoint(tmp_path)


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all\n" * 10])
def test_load_garbage(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "garbage.pt"
    path.write_bytes(content)
    with pytest.raises(UnusableInputError, match="not a PyTorch checkpoint") as info:
        loading.load_checkpoint(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message
    assert "--trust-checkpoint" not in message  # trusting a broken file would not help


@pytest.mark.parametrize("cut", [0.25, 0.5, 0.9, -1, 8])
def test_a_truncated_checkpoint_says_so(tmp_path: Path, cut: float) -> None:
    """Cut anywhere (half: torch says only "[Errno 22] Invalid argument"), it is named truncated or corrupt."""
    data = CHECKPOINT.read_bytes()
    path = tmp_path / "half.pt"
    path.write_bytes(data[: int(len(data) * cut) if isinstance(cut, float) else cut])
    with pytest.raises(
        UnusableInputError, match=r"not a readable PyTorch checkpoint \(truncated or corrupt\?\)"
    ) as info:
        loading.load_checkpoint(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message and "Errno" not in message
    assert "--trust-checkpoint" not in message  # trusting a broken file would not help


def test_load_non_fairseq_torch_file(tmp_path: Path) -> None:
    path = tmp_path / "weights.pt"
    torch.save({"weight": torch.zeros(3)}, path)
    with pytest.raises(UnusableInputError, match="not a fairseq checkpoint") as info:
        loading.load_checkpoint(path)
    assert str(path) in str(info.value)


def test_load_bare_tensor_file(tmp_path: Path) -> None:
    path = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), path)
    with pytest.raises(UnusableInputError, match=r"not a fairseq checkpoint \(holds a Tensor"):
        loading.load_checkpoint(path)


def test_unlisted_global_needs_trust(tmp_path: Path) -> None:
    """A global outside the allowlist: refused safely, with the argument that allows it named (the
    API's name through the API, the CLI's flag on the command line)."""
    state = torch.load(CHECKPOINT, weights_only=False)
    state["extra_state"]["saved_on"] = datetime.date(2024, 1, 1)
    path = tmp_path / "with_date.pt"
    torch.save(state, path)
    with pytest.raises(UnusableInputError, match="datetime.date.*trust_checkpoint=True") as info:
        loading.load_checkpoint(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value) and "--" not in str(info.value)
    code, _, err = run_main("validate", RAW_ONNX, "--checkpoint", path, "--quick")
    assert code == 2 and "datetime.date" in err and "re-run with --trust-checkpoint only" in err, err
    assert type(loading.load_checkpoint(path, trust=True)).__name__ == "HubertModel"


def test_allowlist_covers_fairseq_extras(tmp_path: Path) -> None:
    """What real fairseq checkpoints carry besides the model loads without trust."""
    import argparse

    from omegaconf import OmegaConf

    state = torch.load(CHECKPOINT, weights_only=False)
    state["extra_state"].update(
        best=np.float64(3.25),
        meters={"loss": np.array([1.0, 2.0], dtype=np.float32), "steps": np.int64(7)},
        old_args=argparse.Namespace(arch="hubert", lr=[0.0005]),
        old_cfg=OmegaConf.create({"common": {"seed": 1, "tags": ["a"], "none": None, "rate": 0.5}}),
    )
    path = tmp_path / "with_extras.pt"
    torch.save(state, path)
    assert type(loading.load_checkpoint(path)).__name__ == "HubertModel"


def test_load_leaves_torch_load_alone() -> None:
    real = torch.load
    loading.load_checkpoint(CHECKPOINT)
    assert torch.load is real


# ---------------------------------------------------------------- the pad_to_multiple shim


def _shim_lengths(stack: tuple[tuple[int, int], ...]) -> list[tuple[str, tuple[int, ...]]]:
    odd = next(n for n in range(16000, 17000) if frames(n, stack) % 2 == 1)
    even = next(n for n in range(16000, 17000) if frames(n, stack) % 2 == 0)
    mod_zero = mod_zero_samples(stack, 8000)
    assert mod_zero is not None
    return [
        ("1 frame", (min_samples(stack, 1),)),
        ("2 frames", (min_samples(stack, 2),)),
        ("3 frames", (min_samples(stack, 3),)),
        ("samples % frames == 0", (mod_zero,)),
        ("odd frames", (odd,)),
        ("even frames", (even,)),
        ("batch 2 padded, odd frames", (odd, odd // 2)),
        ("batch 2 padded, even frames", (even, (even * 3) // 5)),
    ]


def test_shim_preserves_features(model: torch.nn.Module) -> None:
    """Without the encoder's pad-to-even, the real frames' features are unchanged."""
    for name, lengths in _shim_lengths(modules.conv_stack(model)):
        source, padding_mask = Case(name, lengths).inputs()
        expected = modules.reference_features(model, source, padding_mask)
        with trace._no_seq_len_padding():
            shimmed = modules.reference_features(model, source, padding_mask)
        assert shimmed.shape == expected.shape, name
        assert np.abs(shimmed - expected).max() <= 1e-5, name


def test_shim_cases_really_pad(model: torch.nn.Module, monkeypatch: pytest.MonkeyPatch) -> None:
    """The comparison above means something: the encoder does pad the odd frame counts."""
    padded: list[int] = []
    original = loading.fairseq_wav2vec2.pad_to_multiple

    def spy(x, multiple, dim=-1, value=0):  # type: ignore[no-untyped-def]
        result = original(x, multiple, dim=dim, value=value)
        padded.append(result[1])
        return result

    monkeypatch.setattr(loading.fairseq_wav2vec2, "pad_to_multiple", spy)
    source, padding_mask = Case("3 frames", (min_samples(modules.conv_stack(model), 3),)).inputs()
    modules.reference_features(model, source, padding_mask)
    assert model.encoder.required_seq_len_multiple == 2
    assert padded and padded[0] == 1


def test_shim_restored_on_error() -> None:
    original = loading.fairseq_wav2vec2.pad_to_multiple
    with pytest.raises(RuntimeError), trace._no_seq_len_padding():
        assert loading.fairseq_wav2vec2.pad_to_multiple is not original
        raise RuntimeError("boom")
    assert loading.fairseq_wav2vec2.pad_to_multiple is original


# ---------------------------------------------------------------- export_raw


def test_raw_signature(raw: onnx.ModelProto) -> None:
    assert _signature(raw) == [
        ("source", onnx.TensorProto.FLOAT, ["batch", "samples"]),
        ("padding_mask", onnx.TensorProto.BOOL, ["batch", "samples"]),
        ("features", onnx.TensorProto.FLOAT, ["batch", "frames", 32]),
    ]
    assert any("padding_mask" in node.input for node in raw.graph.node)
    assert raw.opset_import[0].version == 17


def test_raw_metadata(raw: onnx.ModelProto) -> None:
    meta = {p.key: p.value for p in raw.metadata_props}
    assert json.loads(meta["hubert_fix.conv_stack"]) == [[10, 5], [3, 2], [3, 2], [3, 2], [3, 2], [2, 2], [2, 2]]
    assert meta["hubert_fix.embed_dim"] == "32"
    assert meta["hubert_fix.output_layer"] == ""
    assert meta["hubert_fix.precision"] == "fp32"
    assert meta["hubert_fix.model"] == "HubertModel"
    assert meta["hubert_fix.exporter"].startswith("torch.onnx TorchScript, torch ")
    assert meta["hubert_fix.sample_rate"] == "16000"


def test_raw_keeps_the_bugs(raw: onnx.ModelProto) -> None:
    """The export is unrepaired: the frozen slice's Mod/Neg and the padding Where are there."""
    ops = Counter(node.op_type for node in raw.graph.node)
    assert ops["Mod"] >= 1 and ops["Neg"] >= 1 and ops["Slice"] >= 1 and ops["Where"] >= 1


def test_raw_fails_on_padded_batch(raw: onnx.ModelProto) -> None:
    """The bug this project repairs: ORT rejects the misaligned Where on a padded batch."""
    source, padding_mask = Case("batch 2, padded", (16000, 9000)).inputs()
    with pytest.raises(Exception, match=r"Where.*(broadcast|Broadcast)"):
        _session(raw).run(None, {"source": source, "padding_mask": padding_mask})


def test_raw_output_layer_metadata(model: torch.nn.Module) -> None:
    proto = trace.export_raw(model, output_layer=1)
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["hubert_fix.output_layer"] == "1"


def test_raw_opset_13_on_fresh_model() -> None:
    """Opsets < 14 go through fairseq's prepare_for_onnx_export_ on a copy; the copy must
    work on a model that has not run yet (weight_norm's computed weight is not a leaf)."""
    fresh = loading.load_checkpoint(CHECKPOINT)
    proto = trace.export_raw(fresh, opset=13)
    assert proto.opset_import[0].version == 13
    assert _signature(proto)[0] == ("source", onnx.TensorProto.FLOAT, ["batch", "samples"])
    assert not any(getattr(m, "onnx_trace", False) for m in fresh.modules())  # the original is untouched


def test_opset_out_of_range(model: torch.nn.Module) -> None:
    with pytest.raises(HubertFixError, match="opsets 11..20"):
        trace.export_raw(model, opset=21)


def test_output_layer_out_of_range(model: torch.nn.Module) -> None:
    with pytest.raises(UnusableInputError, match="1..2"):
        trace.export_raw(model, output_layer=3)


def test_export_leaves_model_and_fairseq_unchanged(model: torch.nn.Module, raw: onnx.ModelProto) -> None:
    # importlib: ``import fairseq.models.wav2vec.utils as u`` binds fairseq.utils, because
    # the package's star imports re-export wav2vec2's ``from fairseq import utils``.
    wav2vec_utils = importlib.import_module("fairseq.models.wav2vec.utils")
    assert loading.fairseq_wav2vec2.pad_to_multiple is wav2vec_utils.pad_to_multiple
    assert not model.training
    assert next(model.parameters()).dtype == torch.float32


def test_committed_raw_fixture_is_current(raw: onnx.ModelProto) -> None:
    """A stale fixtures/*.raw.onnx (other torch, other exporter code) is caught here."""
    committed = onnx.load(str(RAW_ONNX))
    assert _signature(committed) == _signature(raw)
    assert Counter(n.op_type for n in committed.graph.node) == Counter(n.op_type for n in raw.graph.node)


@pytest.mark.parametrize("opset", sorted(set(RAW_BY_OPSET) - {17}))
def test_committed_old_opset_fixtures_are_current(model: torch.nn.Module, opset: int) -> None:
    committed = onnx.load(str(RAW_BY_OPSET[opset]))
    fresh = trace.export_raw(model, opset=opset)
    assert committed.opset_import == fresh.opset_import
    assert _signature(committed) == _signature(fresh)
    assert Counter(n.op_type for n in committed.graph.node) == Counter(n.op_type for n in fresh.graph.node)


def test_committed_cases_match_matrix_and_reference(model: torch.nn.Module) -> None:
    data = np.load(CASES, allow_pickle=False)
    matrix = cases(modules.conv_stack(model), modules.embed_dim(model))
    for index, case in enumerate(matrix):
        assert str(data[f"case{index}.name"]) == case.name
        source, padding_mask = case.inputs()
        np.testing.assert_array_equal(data[f"case{index}.source"], source)
        np.testing.assert_array_equal(data[f"case{index}.padding_mask"], padding_mask)
        features = modules.reference_features(model, source, padding_mask)
        np.testing.assert_allclose(data[f"case{index}.features"], features, atol=1e-5)
    assert f"case{len(matrix)}.source" not in data


# ---------------------------------------------------------------- devices


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
@pytest.mark.parametrize("kwargs", [{"device": "cuda"}, {"fp16": True, "device": "cuda"}])
def test_cuda_requests_without_cuda(model: torch.nn.Module, kwargs: dict[str, object]) -> None:
    with pytest.raises(DeviceUnavailableError, match="needs a CUDA GPU"):
        trace.export_raw(model, **kwargs)
    source, padding_mask = Case("1 s", (16000,)).inputs()
    with pytest.raises(DeviceUnavailableError, match="needs a CUDA GPU"):
        modules.reference_features(model, source, padding_mask, **kwargs)


def test_final_proj_needs_a_final_proj_layer(model: torch.nn.Module) -> None:
    stripped = modules.copy_model(model)
    del stripped.final_proj
    with pytest.raises(HubertFixError, match="has no final_proj"):
        trace.export_raw(stripped, final_proj=True)


def test_wav2vec2_traced_without_padding_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """wav2vec 2.0's ``if padding_mask.any()`` freezes at trace time: an unpadded example
    would export a graph with no padding path at all; the export must notice."""
    wav2vec2 = loading.load_checkpoint(FIXTURES / "wav2vec2_base_tiny.pt")
    assert any("padding_mask" in n.input for n in trace.export_raw(wav2vec2).graph.node)
    padded_example = trace._trace_example

    def unpadded(*args: object, **kwargs: object) -> tuple[torch.Tensor, torch.Tensor]:
        source, padding_mask = padded_example(*args, **kwargs)
        return source, torch.zeros_like(padding_mask)

    monkeypatch.setattr(trace, "_trace_example", unpadded)
    with pytest.raises(HubertFixError, match="does not use padding_mask"):
        trace.export_raw(wav2vec2)
