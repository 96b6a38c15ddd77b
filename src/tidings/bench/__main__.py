"""``python -m tidings.bench`` runs the same entry point as ``tidings bench`` (child processes use it)."""

from __future__ import annotations

import sys

from tidings.bench import main

sys.exit(main(sys.argv[1:]))
