"""validate --runtime openvino: the matrix on OpenVINO's CPU plugin, in the precision it chooses here.

OpenVINO accepts the unrepaired export: it compiles it, then fails on every padded batch
and most lengths, gives NaN for the 1-frame input, and silently corrupts the padded
frames == C case; only the unpadded frames == C case comes out right. The repaired model
matches on every case. OpenVINO infers in bfloat16 on a CPU with BF16 and in float32
elsewhere: the assertions hold for both (the tolerance follows the precision it reports).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from conftest import CASES, RAW, run_main

pytest.importorskip("openvino")
pytestmark = pytest.mark.usefixtures("openvino_in_fp32")  # outcomes the same on every CPU


def test_the_repaired_model_validates_on_openvino(repaired_raw: Path) -> None:
    code, out, err = run_main("validate", repaired_raw, "--runtime", "openvino", "--reference", CASES, "--json")
    report = json.loads(out)
    assert code == 0, err
    assert report["provider"] in ("OpenVINO CPU (fp32)", "OpenVINO CPU (bf16)")
    precision = report["provider"].split("(")[1].rstrip(")")
    assert report["precision"] == precision
    if precision == "bf16":  # the bfloat16 tolerance, not float32's 1e-3
        assert report["tolerance"]["max_rel_diff"] == 0.1
    assert len(report["cases"]) == 13 and all(c["ok"] for c in report["cases"])


def test_openvino_runs_the_unrepaired_export_wrong() -> None:
    code, out, _ = run_main("validate", RAW, "--runtime", "openvino", "--reference", CASES, "--json")
    cases = {c["name"]: c for c in json.loads(out)["cases"]}
    assert code == 1
    assert cases["frames == C (32)"]["ok"]  # unpadded: the misaligned Where does nothing
    silent = cases["frames == C (32), batch 1 padded"]
    assert not silent["ok"] and silent["max_abs_diff"] > 1  # runs, and corrupts: only a reference shows it
    assert any("NaN" in f for f in cases["1 frame (shortest input)"]["failures"])
    assert any(f.startswith("OpenVINO failed: ") and "Where" in f for f in cases["batch 2, padded"]["failures"])


def test_through_the_api(repaired_raw: Path) -> None:
    import hubert_fix

    report = hubert_fix.validate(repaired_raw, reference=CASES, quick=True, runtime="openvino")
    assert report.ok and report.provider.startswith("OpenVINO CPU")


def test_openvino_is_cpu_only_here(repaired_raw: Path) -> None:
    code, _, err = run_main("validate", repaired_raw, "--runtime", "openvino", "--device", "cuda")
    assert code == 2 and "--runtime openvino runs on the CPU here" in err


def test_without_the_extra_the_error_names_it(repaired_raw: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)
    code, _, err = run_main("validate", repaired_raw, "--runtime", "openvino")
    assert code == 2 and "pip install -e '.[openvino]' in the hubert-fix checkout" in err and err.count("\n") == 1


def test_a_crash_of_openvino_is_exit_2(repaired_raw: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import os

    from hubert_fix.onnxio import openvino

    monkeypatch.setattr(openvino, "_probe", lambda path, precision: os.abort())
    model = tmp_path / "m.onnx"
    shutil.copyfile(repaired_raw, model)
    code, _, err = run_main("validate", model, "--runtime", "openvino")
    assert code == 2 and "OpenVINO crashed while compiling" in err and "SIGABRT" in err, err


def _mapped_kb(path: Path) -> int | None:
    """Resident KB of this process's mappings of ``path`` (None: not mapped)."""
    found, size, inside = False, 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if "-" in fields[0] and len(fields) >= 5 and ":" in fields[3]:  # a mapping's header line
            inside = len(fields) == 6 and fields[5] == str(path.resolve())
            found |= inside
        elif inside and fields[0] == "Rss:":
            size += int(fields[1])
    return size if found else None


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="Linux only: /proc/self/smaps")
def test_the_weights_pages_are_handed_back_after_the_first_run(repaired_raw: Path, tmp_path: Path) -> None:
    """OpenVINO maps an IR's weights file; once the plugin has converted the weights (compile, first
    run), the pages it read are handed back (heap.page_out), and every later run computes the same bits."""
    import mmap

    import numpy as np
    import onnx
    import openvino as ov

    from hubert_fix.analysis.interface import describe
    from hubert_fix.onnxio.heap import page_out
    from hubert_fix.onnxio.openvino import create_openvino_session
    from hubert_fix.onnxio.writing import synced

    probe = tmp_path / "probe.bin"
    probe.write_bytes(bytes(range(256)) * 4096)
    synced(probe)  # on disk: a page the kernel has yet to write is not handed back
    with probe.open("rb") as handle, mmap.mmap(handle.fileno(), 0, prot=mmap.PROT_READ) as view:
        assert sum(view[1::4096]) == len(view) // 4096 and _mapped_kb(probe) > 0  # every page touched
        page_out([str(probe)])
        if _mapped_kb(probe) > 0:
            pytest.skip("this kernel does not take MADV_PAGEOUT (Linux 5.4)")
        assert view[:256] == bytes(range(256))  # read again from the file
    xml = tmp_path / "model.xml"
    ov.save_model(ov.Core().read_model(str(repaired_raw)), str(xml), compress_to_fp16=False)
    weights = xml.with_suffix(".bin")
    synced(weights)
    face = describe(onnx.load(str(repaired_raw)), str(repaired_raw))
    source = np.random.default_rng(0).standard_normal((2, 16000)).astype(np.float32)
    feeds = face.feeds(source, np.zeros(source.shape, dtype=bool))
    plain = ov.Core().compile_model(str(xml), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    expected = np.array(plain(feeds)[plain.outputs[0]])
    del plain  # its own mapping of the weights: a page mapped twice is not handed back
    session = create_openvino_session(str(xml), str(xml), precision="fp32")
    first = session.run(None, feeds)[0]
    assert _mapped_kb(weights) in (None, 0)  # handed back (or never mapped)
    assert np.array_equal(first, expected) and np.array_equal(session.run(None, feeds)[0], expected)
