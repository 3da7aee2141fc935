"""What `pip install hubert-fix` gets: the package, its passes and the demo's checkpoint; no fixture scripts."""

from __future__ import annotations

import email
import subprocess
import sys
import zipfile
from pathlib import Path

from conftest import CHECKPOINT, ROOT

from hubert_fix._version import __version__


def test_the_wheel_holds_the_package_and_the_demo_checkpoint_only(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(ROOT)],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("hubert_fix-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        checkpoint = archive.read("hubert_fix/cli/hubert_base_tiny.pt")
        info = next(n for n in names if n.endswith(".dist-info/METADATA"))
        meta = email.message_from_bytes(archive.read(info))
    ours = [n for n in names if ".dist-info/" not in n]
    assert all(n.startswith("hubert_fix/") for n in ours), ours
    assert [n for n in ours if not n.endswith(".py")] == ["hubert_fix/cli/hubert_base_tiny.pt"]
    assert checkpoint == CHECKPOINT.read_bytes()  # the fixture itself, not the link
    scripts = {p.name for p in (ROOT / "fixtures").glob("*.py")}
    assert not [n for n in ours if Path(n).name in scripts - {"__init__.py"}]
    assert "hubert_fix/passes/where_broadcast.py" in ours and "passes/where_broadcast.py" not in names
    assert meta["Version"] == __version__ and meta["License-Expression"] == "MIT" and meta["Author"]
