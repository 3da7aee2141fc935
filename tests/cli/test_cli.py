"""The console script's contract: commands, exit codes, JSON, and what it never does."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import CASES, RAW, assert_one_clear_line, cuda_runs, stderr_on_a_terminal
from onnx import TensorProto, helper

from hubert_fix.passes import DEFAULT_PASSES


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def repaired(tmp_path_factory) -> Path:
    from conftest import run_cli

    out = tmp_path_factory.mktemp("repaired") / "fixed.onnx"
    result = run_cli("repair", RAW, "-o", out, "--json")
    assert result.returncode == 0, result.stderr
    return out


def test_check_flags_the_raw_export(cli) -> None:
    before = digest(RAW)
    result = cli("check", RAW)
    assert result.returncode == 1, result.stderr
    assert "where-broadcast" in result.stdout and "frozen-slice" in result.stdout
    assert "/encoder/Where" in result.stdout
    assert digest(RAW) == before

    data = json.loads(cli("check", RAW, "--json").stdout)
    assert data["applied"] is False and data["edits"] == 2 and data["unrepairable"] == 0
    by_pass = {p["pass"]: p for p in data["passes"]}
    assert [e["node"] for e in by_pass["where-broadcast"]["edits"]] == ["/encoder/Where"]
    assert len(by_pass["frozen-slice"]["edits"]) == 1
    assert not any(p["modified"] for p in data["passes"])


def test_repair_keeps_the_interface_and_records_itself(repaired: Path) -> None:
    raw, fixed = onnx.load(str(RAW)), onnx.load(str(repaired))
    assert [i.SerializeToString() for i in fixed.graph.input] == [i.SerializeToString() for i in raw.graph.input]
    assert [o.SerializeToString() for o in fixed.graph.output] == [o.SerializeToString() for o in raw.graph.output]
    assert fixed.opset_import == raw.opset_import and fixed.ir_version == raw.ir_version
    assert (fixed.producer_name, fixed.producer_version) == (raw.producer_name, raw.producer_version)
    meta = {p.key: p.value for p in fixed.metadata_props}
    for prop in raw.metadata_props:
        assert meta[prop.key] == prop.value
    record = json.loads(meta["hubert_fix.repair"])
    assert record["tool"] == "hubert-fix" and len(record["edits"]) == 2
    assert record["passes"] == [
        "node-order", "cast-types", "pinned-dims", "where-broadcast", "frozen-pad", "frozen-slice", "ctc-mask-scatter",
        "output-shapes", "frozen-batch",
    ]  # fmt: skip
    onnx.checker.check_model(fixed, full_check=True)


def test_repair_is_idempotent(cli, repaired: Path, tmp_path: Path) -> None:
    assert cli("check", repaired).returncode == 0
    again = tmp_path / "again.onnx"
    result = cli("repair", repaired, "-o", again, "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["edits"] == 0
    first, second = onnx.load(str(repaired)), onnx.load(str(again))
    assert first.graph == second.graph


def test_validate_passes_the_repaired_model_on_every_case(cli, repaired: Path) -> None:
    result = cli("validate", repaired, "--reference", CASES, "--device", "cpu", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    stored = np.load(CASES)
    inputs = [c for c in report["cases"] if c["kind"] == "case"]
    assert len(inputs) == sum(k.endswith(".source") for k in stored.files) >= 8
    assert report["ok"] and report["provider"] == "CPUExecutionProvider" and report["reference"] == "stored"
    assert {c["kind"] for c in report["cases"]} == {"case", "static check", "batch consistency"}
    for case in report["cases"]:
        assert case["status"] == "PASS"
        assert case["kind"] == "static check" or case["max_abs_diff"] <= report["tolerance"]["max_abs_diff"]


def test_validate_fails_the_raw_export(cli) -> None:
    result = cli("validate", RAW, "--reference", CASES, "--device", "cpu", "--json")
    assert result.returncode == 1
    cases = {c["name"]: c for c in json.loads(result.stdout)["cases"]}
    # Only an unpadded input whose frames == C gets through: the right-aligned mask is
    # then all False, so the misaligned Where happens to do nothing.
    assert [name for name, c in cases.items() if c["ok"]] == ["frames == C (32)"]
    broadcast = [c for c in cases.values() if any("broadcast" in f for f in c["failures"])]
    assert len(broadcast) >= 6, "the raw export must hit ORT's Where broadcast error"
    silent = cases["frames == C (32), batch 1 padded"]  # runs, but the features are garbage
    assert silent["shape"] == silent["expected_shape"] and silent["max_abs_diff"] > 1e-2


def test_validate_without_reference_checks_shapes_and_values(cli, repaired: Path) -> None:
    result = cli("validate", repaired, "--device", "cpu", "--quick")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no reference" in result.stdout and "FAIL" not in result.stdout
    assert "PASS  frames == C" not in result.stdout and "RAN   frames == C (32), batch 1 padded" in result.stdout
    assert "needs a reference" in result.stdout


def test_validate_cuda_refuses_when_cuda_does_not_run(cli, repaired: Path) -> None:
    import onnxruntime as ort

    if cuda_runs():
        pytest.skip("CUDA really runs here")
    result = cli("validate", repaired, "--device", "cuda")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "cuda" in result.stderr.lower()
    assert "CUDAExecutionProvider" in ort.get_available_providers() or "no CUDAExecutionProvider" in result.stderr


def test_passes_lists_the_registry_in_order(cli) -> None:
    result = cli("passes", "--json")
    # the registry's order itself is pinned by tests/passes/test_frozen_slice.py::test_default_order
    assert [p["name"] for p in json.loads(result.stdout)["passes"]] == [p.name for p in DEFAULT_PASSES]
    assert cli("repair", RAW, "-o", "/nonexistent/x.onnx", "--skip", "no-such-pass").returncode == 2


def test_skip_leaves_a_pass_out(cli) -> None:
    data = json.loads(cli("check", RAW, "--json", "--skip", "frozen-slice").stdout)
    assert [p["pass"] for p in data["passes"]] == [
        "node-order",
        "cast-types",
        "pinned-dims",
        "where-broadcast",
        "frozen-pad",
        "ctc-mask-scatter",
        "output-shapes",
        "frozen-batch",
    ] and data["edits"] == 1


# ---------------------------------------------------------------- models with nothing to repair


def plain_model() -> onnx.ModelProto:
    node = helper.make_node("Relu", ["x"], ["y"], name="relu")
    graph = helper.make_graph(
        [node],
        "plain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="someone")
    model.ir_version = 8
    return model


def test_a_model_with_no_problem(cli, tmp_path: Path) -> None:
    path = tmp_path / "plain.onnx"
    onnx.save(plain_model(), str(path))
    check = cli("check", path)
    assert check.returncode == 0 and "nothing to repair" in check.stdout
    out = tmp_path / "out.onnx"
    result = cli("repair", path, "-o", out, "--json")
    assert result.returncode == 0 and json.loads(result.stdout)["edits"] == 0
    copy = onnx.load(str(out))
    assert copy.graph == plain_model().graph and copy.producer_name == "someone"


@pytest.mark.parametrize("damage", ["IR version ORT does not support", "op ORT does not have"])
@pytest.mark.parametrize("command", ["check", "repair", "validate"])
def test_a_model_onnx_runtime_cannot_load_is_unusable(cli, tmp_path: Path, damage: str, command: str) -> None:
    model = plain_model()
    if damage.startswith("IR"):
        model.ir_version = onnx.IR_VERSION  # the onnx library's newest: beyond what ORT reads
    else:
        model.graph.node[0].domain = "com.example"
        model.opset_import.append(helper.make_opsetid("com.example", 1))
    path, out = tmp_path / "model.onnx", tmp_path / "out.onnx"
    onnx.save(model, str(path))
    result = cli(command, path, *(["-o", out] if command == "repair" else []))
    assert_one_clear_line(result, path)
    assert "ONNX Runtime cannot load this model" in result.stderr and not out.exists()


# ---------------------------------------------------------------- unusable input


def bad_inputs(tmp: Path) -> dict[str, Path]:
    raw = RAW.read_bytes()
    files = {
        "missing": tmp / "missing.onnx",
        "directory": tmp / "a-directory.onnx",
        "empty": tmp / "empty.onnx",
        "random bytes": tmp / "random.onnx",
        "truncated": tmp / "truncated.onnx",
        "text": tmp / "text.onnx",
    }
    files["directory"].mkdir()
    files["empty"].write_bytes(b"")
    files["random bytes"].write_bytes(np.random.default_rng(0).bytes(4096))
    files["truncated"].write_bytes(raw[: len(raw) // 2])
    files["text"].write_text("this is not a model\n")
    return files


@pytest.mark.parametrize("kind", ["missing", "directory", "empty", "random bytes", "truncated", "text"])
@pytest.mark.parametrize("command", ["check", "repair", "validate"])
def test_unusable_input_gets_one_line_and_exit_2(cli, tmp_path: Path, kind: str, command: str) -> None:
    path = bad_inputs(tmp_path)[kind]
    out = tmp_path / "out.onnx"
    args = [command, path] + (["-o", out] if command == "repair" else [])
    assert_one_clear_line(cli(*args), path)
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp file left


@pytest.mark.parametrize(
    "make_out",
    [
        lambda tmp: tmp / "no-such-dir" / "out.onnx",
        lambda tmp: tmp / "a-file" / "out.onnx",
        lambda tmp: tmp,
    ],
    ids=["missing directory", "parent is a file", "output is a directory"],
)
def test_unwritable_output(cli, tmp_path: Path, make_out) -> None:
    (tmp_path / "a-file").write_text("x")
    out = make_out(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    assert_one_clear_line(cli("repair", RAW, "-o", out), out)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_output_equal_to_input_is_refused(cli, tmp_path: Path) -> None:
    model = tmp_path / "model.onnx"
    model.write_bytes(RAW.read_bytes())
    before = digest(model)
    assert_one_clear_line(cli("repair", model, "-o", model), model)
    assert digest(model) == before


def test_module_entry_point() -> None:
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "hubert_fix", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.startswith("hubert-fix ")


def test_fixing_only_the_where_leaves_the_frozen_slice_lengths_broken(cli, tmp_path: Path) -> None:
    out = tmp_path / "where-only.onnx"
    assert cli("repair", RAW, "-o", out, "--skip", "frozen-slice").returncode == 5  # written, a pass left out
    result = cli("validate", out, "--reference", CASES, "--device", "cpu", "--json")
    assert result.returncode == 1
    failed = {c["name"] for c in json.loads(result.stdout)["cases"] if not c["ok"] and c["kind"] == "case"}
    stored = np.load(CASES)
    mod_zero = set()
    for index in range(len([k for k in stored.files if k.endswith(".source")])):
        samples, frames = stored[f"case{index}.source"].shape[1], stored[f"case{index}.features"].shape[1]
        if samples % frames == 0:
            mod_zero.add(str(stored[f"case{index}.name"]))
    assert len(mod_zero) >= 3 and failed == mod_zero


def test_progress_on_a_terminal_only(cli, repaired: Path) -> None:
    args = ("validate", repaired, "--quick", "--device", "cpu")
    piped = cli(*args)
    assert piped.returncode == 0 and piped.stderr == ""  # a pipeline sees only the report
    stdout, terminal = stderr_on_a_terminal(*args)
    assert "[1/10]" in terminal and "PASSED |" in terminal and b"[1/10]" not in stdout
    stdout, terminal = stderr_on_a_terminal(*args, "--quiet")
    assert terminal == "" and b"12 checks: 2 passed, 10 ran, not compared" in stdout


def test_unrepairable_problem_exits_3_and_writes_nothing(cli, tmp_path: Path) -> None:
    import onnx_builders

    # Nothing ties the mask's dims to the data's: neither alignment can be proven.
    path = tmp_path / "unprovable.onnx"
    onnx.save(onnx_builders.where_model(["b2", "t2"], ["batch", "frames", 8]), str(path))
    check = cli("check", path, "--json")
    assert check.returncode == 3  # check says what repair would do: refuse
    assert json.loads(check.stdout)["unrepairable"] == 1 and json.loads(check.stdout)["edits"] == 0
    out = tmp_path / "out.onnx"
    result = cli("repair", path, "-o", out, "--json")
    assert result.returncode == 3 and not out.exists()
    where = next(p for p in json.loads(result.stdout)["passes"] if p["pass"] == "where-broadcast")
    assert where["declined"][0]["blocking"] is True
    assert_one_clear_line(result, path, code=3)


def foreign_export(path: Path) -> None:
    """The fixture as someone else might have exported it: other input names, no metadata."""
    model = onnx.load(str(RAW))
    renames = {"source": "audio", "padding_mask": "mask"}
    for graph_input in model.graph.input:
        graph_input.name = renames[graph_input.name]
    for node in model.graph.node:
        node.input[:] = [renames.get(name, name) for name in node.input]
    del model.metadata_props[:]
    onnx.save(model, str(path))


def test_a_foreign_export_without_our_metadata(cli, tmp_path: Path) -> None:
    raw, fixed = tmp_path / "theirs.onnx", tmp_path / "fixed.onnx"
    foreign_export(raw)
    assert json.loads(cli("check", raw, "--json").stdout)["edits"] == 2
    assert cli("repair", raw, "-o", fixed).returncode == 0
    assert [i.name for i in onnx.load(str(fixed)).graph.input] == ["audio", "mask"]
    # The conv stack and C now come from the graph itself, the inputs from their types.
    result = cli("validate", fixed, "--reference", CASES, "--device", "cpu", "--json")
    assert result.returncode == 0, result.stdout
    cases = [c for c in json.loads(result.stdout)["cases"] if c["kind"] == "case"]
    assert len(cases) == 11 and all(c["shape"] == c["expected_shape"] for c in cases)
