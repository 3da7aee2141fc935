"""The pre-commit hook (``.pre-commit-hooks.yaml``): ``hubert-fix check`` on every staged ONNX file.

pre-commit passes the staged files that match ``\\.onnx$`` as arguments; each gets its own
check and report, and the hook fails unless every one of them is clean (check exit 0).
The exit status is the first non-zero check exit (an interrupt, 130, stops at once), so
a script can tell a model to repair (1) from an unusable file (2) or a refusal (3).
"""

from __future__ import annotations

import sys

from hubert_fix.cli import main as hubert_fix
from hubert_fix.errors import EXIT_INTERRUPTED


def main(argv: list[str] | None = None) -> int:
    codes = []
    for path in sys.argv[1:] if argv is None else argv:
        codes.append(hubert_fix(["check", "--quiet", path]))
        if codes[-1] == EXIT_INTERRUPTED:
            break
    return next((code for code in codes if code), 0)


if __name__ == "__main__":
    sys.exit(main())
