"""Tidings: a real-time notification platform for social products."""

from __future__ import annotations

__version__ = "0.1.0"
