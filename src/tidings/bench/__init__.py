"""The benchmark suite (``tidings bench``). Not built yet: this entry point says so instead of pretending."""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str]) -> int:
    print("tidings bench: the benchmark suite is not built yet", file=sys.stderr)
    return 2
