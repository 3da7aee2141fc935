"""The benchmark scripts as a new user meets them: their --help, where a run writes, and a
SIGTERM mid-run (``bench/run.py``, ``bench/attention.py``); and the shapes the floor times
(``bench/floor.py``). Nothing here judges a measurement."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT

BENCH = ROOT / "bench"


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # a dataclass looks its module up while it is made
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["run", "attention"])
def test_help_is_quiet_and_complete(name: str) -> None:
    if name == "run":
        pytest.importorskip("fairseq")
    result = subprocess.run(
        [sys.executable, BENCH / f"{name}.py", "--help"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr  # no fairseq "Please install tensorboardX"
    parser = _script(name).build_parser()
    assert all(action.help for action in parser._actions), name  # noqa: SLF001 - every option says what it does
    assert parser.description[-1] in ".?" and " ".join(parser.description.split()) in " ".join(result.stdout.split())


def test_a_plain_run_leaves_the_published_results_alone(tmp_path: Path) -> None:
    """bench/results is what docs/benchmarks.md shows: only --publish writes it (with the page)."""
    pytest.importorskip("fairseq")
    run = _script("run")
    assert run.output_folder(None, publish=False) is None  # a new folder in the temp folder
    assert run.output_folder(tmp_path, publish=False) == tmp_path
    assert run.output_folder(None, publish=True) == run.RESULTS == BENCH / "results"
    for out, publish in ((BENCH / "results", False), (tmp_path, True)):
        with pytest.raises(ValueError, match="docs/benchmarks.md shows"):
            run.output_folder(out, publish=publish)


def test_sigterm_removes_the_work_folder(tmp_path: Path) -> None:
    """The base model's work folder holds GBs: a terminated run does not leave it behind."""
    pytest.importorskip("fairseq")
    args = ["--sizes", "base", "--no-variants", "--runs", "1", "--repeats", "1", "--out", tmp_path / "out"]
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    process = subprocess.Popen(
        [sys.executable, BENCH / "run.py", *map(str, args)], stderr=subprocess.PIPE, text=True, env=env
    )
    while not process.stderr.readline().startswith("bench: base: build"):  # the work folder exists, the work began
        assert process.poll() is None, "bench/run.py ended before its work began"
    time.sleep(1)
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM
    assert not list(tmp_path.glob("hubert-fix-bench-*")) and not (tmp_path / "out").exists()


#: fairseq's config of HuBERT base (bench/sizes.py), and one as small as the fixtures'.
BASE = {
    "conv_feature_layers": "[(512,10,5)] + [(512,3,2)]*4 + [(512,2,2)]*2",
    "encoder_embed_dim": 768,
    "encoder_ffn_embed_dim": 3072,
    "encoder_layers": 12,
    "encoder_attention_heads": 12,
    "conv_pos": 128,
    "conv_pos_groups": 16,
}
TINY = {**BASE, "conv_feature_layers": "[(32,10,5)] + [(32,3,2)]*4 + [(32,2,2)]*2", "encoder_embed_dim": 64,
        "encoder_ffn_embed_dim": 128, "encoder_layers": 2, "encoder_attention_heads": 4, "conv_pos": 16,
        "conv_pos_groups": 4}  # fmt: skip


def test_the_floor_times_the_model_s_own_products() -> None:
    """Each product, timed as a product and (a conv) as a convolution, has the shape it has in the
    model: 10 s of base is the 148.12 GFLOP the tables name; a runtime's floor takes the fastest
    of its kernels (int8 may use fp32 where that is faster, so it is never above fp32's)."""
    pytest.importorskip("openvino")
    floor = _script("floor")
    assert round(sum(p.flops for p in floor.products(BASE, 160000)) / 1e9, 2) == 148.12
    found = floor.products(TINY, 16000)
    assert [p.what for p in found][:8] == [*(f"conv {i}" for i in range(7)), "post_extract_proj"]
    assert [p.m for p in found[:7]] == [3199, 1599, 799, 399, 199, 99, 49] and found[8].conv == (16, 1)
    import openvino as ov

    def shape(make, product, form: str) -> list[int]:
        result = make(product, floor._operands(product, form), form)()  # ORT: the array; OpenVINO: a dict
        (out,) = result.values() if hasattr(result, "values") else [result]
        return list(out.shape)

    for make in (floor._onnxruntime("fp32"), floor._openvino(ov, "int8")):
        for product in found:
            assert shape(make, product, "product") == [*([product.batch] * (product.batch > 1)), product.m, product.n]
            if product.conv:
                assert shape(make, product, "convolution") == [1, product.n * product.batch, product.m], product
    measured = floor.measure_floors_alone(TINY, 16000, runs=1)
    assert set(measured["products_ms"]) == {p.what for p in found}
    assert 0 < measured["floor_ms"]["ONNX Runtime int8"] <= measured["floor_ms"]["ONNX Runtime fp32"]
