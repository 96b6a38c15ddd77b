"""Sortable unique ids (ULID layout: 48-bit millisecond time + 80 random bits, Crockford base32)."""

from __future__ import annotations

import secrets

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_id(now: float, randbits: int | None = None) -> str:
    """A 26-character id that sorts by ``now`` (seconds since the epoch)."""
    rand = secrets.randbits(80) if randbits is None else randbits
    value = (int(now * 1000) & ((1 << 48) - 1)) << 80 | (rand & ((1 << 80) - 1))
    chars = []
    for _ in range(26):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))
