"""``python -m hubert_fix`` and the ``hubert-fix`` console script.

Nothing heavy is imported before the Ctrl-C handler is in place: an interrupt during the
start-up imports (onnx, onnxruntime, numpy: about a second) is exit 130 with one line,
as at any later moment.
"""

import signal
import sys

from hubert_fix.errors import EXIT_INTERRUPTED


def main(argv: list[str] | None = None) -> int:
    try:
        from hubert_fix.cli import main as run

        code = run(argv)
        # The verdict is out: a Ctrl-C while the interpreter shuts down (ONNX Runtime's
        # teardown takes a moment) stays pending and dies with the process, instead of
        # killing it by SIGINT, silently, with no exit code of ours.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        return code
    except KeyboardInterrupt:  # cli.main handles it once a command runs; this is start-up
        print("hubert-fix: interrupted; nothing written", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
