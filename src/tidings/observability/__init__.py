"""Logs, metrics and traces: how an operator sees what Tidings is doing, without exposing what users send."""

from __future__ import annotations
