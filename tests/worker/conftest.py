"""The planner and worker tests drive the fan-out stack of ``stack.py`` one batch at a time."""

from __future__ import annotations

from .stack import open_stack as open_stack
from .stack import stack as stack
