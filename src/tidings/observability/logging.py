"""Structured logs: JSON lines on stderr, one logger per component, uvicorn's loggers routed through the
same pipeline.

Each line has ``timestamp``, ``level``, ``logger`` (the component: ``tidings.api``, ``tidings.worker``,
``tidings.gateway.hub``, ``uvicorn.error``...), ``event`` (a short snake_case name) and, while a span is
current and tracing is on, ``trace_id`` and ``span_id`` (hex, as Jaeger and Tempo show them).

Tokens, keys, tickets and notification bodies are never passed to a logger. As a second line of defence,
``redact`` replaces values under secret-looking keys, and ``scrub`` masks anything shaped like a JWT or a
bearer credential inside any string value (logs are rare, so a regex per line costs nothing that matters).
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

from tidings.observability import tracing

SECRET_KEYS = frozenset(
    {
        "token",
        "api_key",
        "jwt",
        "jwt_secret",
        "ticket",
        "authorization",
        "cookie",
        "password",
        "secret",
        "webhook_secret",
        "body",
        "payload",
    }
)
REDACTED = "[redacted]"
# JWTs (three base64url parts, the first two JSON objects), "Bearer <credential>", and credentials in query
# strings (stream tickets travel as ?ticket=).
_SECRET_SHAPES = re.compile(
    r"eyJ[\w-]+\.eyJ[\w-]+\.[\w-]*"
    r"|(?i:bearer)\s+[\w.~+/=-]+"
    r"|(?i:ticket|token|api_key|key|secret|password|signature|sig)=[^&\s\"']+"
)
_SHAPE_HINTS = ("eyJ", "earer", "=")
# Libraries that log request URLs, SQL parameters or frames at INFO/DEBUG (bodies, tickets, tokens): kept at
# WARNING whatever the level, so DEBUG for Tidings never means user data in the log.
QUIET = (
    "alembic",
    "sqlalchemy",
    "aiosqlite",
    "asyncpg",
    "httpx",
    "httpcore",
    "websockets",
    "aio_pika",
    "aiormq",
    "nats",
    "redis",
    "urllib3",
)


def redact(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event):
        if key.lower() in SECRET_KEYS:
            event[key] = REDACTED
    return event


def scrub(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in event.items():
        if isinstance(value, str) and any(hint in value for hint in _SHAPE_HINTS):
            event[key] = _SECRET_SHAPES.sub(REDACTED, value)
    return event


def add_trace_ids(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    ids = tracing.current_ids()
    if ids is not None:
        event["trace_id"], event["span_id"] = ids
    return event


# One list, changed in place by ``configure``: structlog loggers cached on first use keep a reference to it,
# so a later ``configure`` (tests, embedders) reaches them too.
_PROCESSORS: list[Any] = []


def configure(level: str = "INFO", *, json: bool = True, stream: TextIO | None = None) -> None:
    """Route every log line (ours, uvicorn's, libraries') through one pipeline to ``stream`` (stderr)."""
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        add_trace_ids,
        redact,
        scrub,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    _PROCESSORS[:] = [*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter]
    structlog.configure(
        processors=_PROCESSORS,
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            scrub,  # tracebacks are rendered just above: mask credentials in them too
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in QUIET:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
