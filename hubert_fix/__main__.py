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

        return run(argv)
    except KeyboardInterrupt:  # cli.main handles it once a command runs; this is start-up
        print("hubert-fix: interrupted; nothing written", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        # The answer is given: a Ctrl-C while the interpreter shuts down (ONNX Runtime's
        # teardown takes a moment) is ignored, process-wide (any thread may receive it),
        # instead of killing the process, silently, once Python has reset its handler.
        signal.signal(signal.SIGINT, signal.SIG_IGN)


if __name__ == "__main__":
    sys.exit(main())
