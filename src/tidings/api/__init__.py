"""The HTTP API: app factory, routes, auth, limits, and the one mapping of errors to statuses and close
codes."""

from __future__ import annotations
