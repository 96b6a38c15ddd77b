"""Opaque pagination cursors: where the next page starts, as URL-safe base64 of a small JSON object.

A cursor only names a position inside data the caller may read anyway (every query is scoped to the caller's
app and user), so it needs no signature; a cursor that does not decode answers 400.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import orjson

from tidings.api.schemas import MAX_SEQ
from tidings.errors import InvalidInputError

MAX_CURSOR = 1024


def encode(position: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(position)).rstrip(b"=").decode()


def decode(cursor: str) -> dict[str, Any]:
    """The position a cursor names, or ``InvalidInputError``."""
    if len(cursor) > MAX_CURSOR:
        raise InvalidInputError("invalid cursor")
    try:
        position = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError) as exc:
        raise InvalidInputError("invalid cursor") from exc
    if not isinstance(position, dict):
        raise InvalidInputError("invalid cursor")
    return position


def string_field(position: dict[str, Any], name: str) -> str:
    value = position.get(name)
    if not isinstance(value, str):
        raise InvalidInputError("invalid cursor")
    return value


def seq_field(position: dict[str, Any], name: str) -> int | None:
    value = position.get(name)
    if value is not None and (type(value) is not int or not 0 <= value <= MAX_SEQ):
        raise InvalidInputError("invalid cursor")
    return value
