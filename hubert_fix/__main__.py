"""``python -m hubert_fix`` is the ``hubert-fix`` command."""

import sys

from hubert_fix.cli import main

sys.exit(main())
