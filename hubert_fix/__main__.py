"""``python -m hubert_fix`` and the ``hubert-fix`` console script.

The Ctrl-C handler is installed before anything heavy is imported, and the start-up
imports (onnx, onnxruntime, numpy: about a second) run with interrupts deferred: a
Ctrl-C then is exit 130 with one line once they are done, as at any later moment
(``hubert_fix.interrupts``).
"""

import signal
import sys

from hubert_fix import interrupts  # the least that runs before the handler is in place


def main(argv: list[str] | None = None) -> int:
    interrupts.install()
    import json

    from hubert_fix.errors import EXIT_INTERRUPTED, INTERRUPTED

    argv = sys.argv[1:] if argv is None else argv
    try:
        # No interrupt inside the native modules' initialisation (onnx's protobuf, numpy,
        # ONNX Runtime): ORT turns one into ImportError and protobuf's upb crashed on one
        # (SIGSEGV); a Ctrl-C during these imports is raised once they are done (~1 s).
        with interrupts.deferred():
            from hubert_fix.cli import main as run

        return run(argv)
    except BaseException as exc:  # cli.main answers once it runs: this is start-up
        if not (isinstance(exc, KeyboardInterrupt) or interrupts.received()):
            raise
        if "--json" in argv:  # a saved report is never empty (a second Ctrl-C here is not raised: interrupts)
            print(json.dumps({"error": INTERRUPTED, "exit_code": EXIT_INTERRUPTED}, indent=2, sort_keys=True))
        print(f"hubert-fix: {INTERRUPTED}", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        # The answer is given: a Ctrl-C while the interpreter shuts down (ONNX Runtime's
        # teardown takes a moment) is ignored, process-wide (any thread may receive it),
        # instead of killing the process, silently, once Python has reset its handler.
        signal.signal(signal.SIGINT, signal.SIG_IGN)


if __name__ == "__main__":
    sys.exit(main())
