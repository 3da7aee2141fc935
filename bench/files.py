"""check and repair at real size, against the floor of reading and writing the same file."""

from __future__ import annotations

import sys
from pathlib import Path

from sizes import SIZES, make_fixtures
from timing import HUBERT_FIX, best_of, timed

FLOOR = "import onnx, sys; onnx.save(onnx.load(sys.argv[1]), sys.argv[2])"
TO_EXTERNAL = (
    "import onnx, sys; onnx.save(onnx.load(sys.argv[1]), sys.argv[2], save_as_external_data=True, "
    "all_tensors_to_one_file=True, location='weights.bin', size_threshold=1024)"
)


def measure_files(name: str, work: Path, repeats: int) -> tuple[dict[str, object], Path, Path]:
    """Build, export, check, repair, floor: the file-level figures for one size."""
    spec, config = SIZES[name]
    checkpoint, raw, repaired = work / f"{name}.pt", work / f"{name}.raw.onnx", work / f"{name}.onnx"
    make_fixtures.build_checkpoint(spec, checkpoint, config)
    exported = timed(HUBERT_FIX, "export", checkpoint, "-o", raw, "--raw", "-q")
    external = work / f"{name}.external"
    external.mkdir()
    timed(sys.executable, "-c", TO_EXTERNAL, raw, external / "model.onnx")
    row = {
        "file_mb": round(raw.stat().st_size / 1e6, 1),
        "export_raw": exported,
        "check": best_of(repeats, HUBERT_FIX, "check", raw, "-q"),
        "repair": best_of(repeats, HUBERT_FIX, "repair", raw, "-o", repaired, "-q"),
        "floor_load_save": best_of(repeats, sys.executable, "-c", FLOOR, raw, work / "floor.onnx"),
        "external_weights_mb": round((external / "weights.bin").stat().st_size / 1e6, 1),
        "repair_external": best_of(
            repeats, HUBERT_FIX, "repair", external / "model.onnx", "-o", work / "ext.onnx", "-q"
        ),
    }
    (work / "floor.onnx").unlink()
    return row, checkpoint, repaired
