"""The ``hubert-fix`` command line: a shell over the Python API (``hubert_fix.api``).

``main`` (``main.py``) parses and runs a command and tells how it ended; each command is a
``Tool`` in a module of its own (``check``, ``repair``, ``export``, ``validate``,
``optimize``, ``demo``, ``list_passes``), whose docstring is its help; ``parser.py`` puts
them together; ``hook.py`` is the pre-commit hook.
"""

from hubert_fix.cli.main import main

__all__ = ["main"]
