"""Sortable unique ids (ULID layout: 48-bit millisecond time + 80 random bits, Crockford base32).

Made for every accepted event and every notification, so both halves are cheap. The 26 characters split
cleanly: 10 for the time (2 zero bits + 48), 16 for the random part (5 bits each). The time's 10 are made
once per millisecond. The random part comes from ``os.urandom`` read ``POOL_BYTES`` at a time into a
per-thread pool (still the kernel's CSPRNG, one syscall per ~250 ids instead of one per id; a forked child
never reuses its parent's pool): 16 random bytes, each mapped to the character of its low 5 bits, are 80
uniformly random bits. Given bits (``randbits``) are encoded 10 bits at a time from a table.
"""

from __future__ import annotations

import os
import threading

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# A byte -> the character of its low 5 bits (256 is a multiple of 32: uniform bytes give uniform characters).
_BYTE_TO_CHAR = bytes.maketrans(bytes(range(256)), bytes(ord(_ALPHABET[b & 31]) for b in range(256)))
_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]  # 10 bits -> 2 characters
_RANDOM_CHARS = 16  # 80 bits
POOL_BYTES = 4096
_MASK_80 = (1 << 80) - 1
_MASK_48 = (1 << 48) - 1


class _Pool(threading.local):
    """This thread's unread random bytes; ``generation`` says which process (fork) they were read in."""

    def __init__(self) -> None:
        self.data = b""
        self.at = 0
        self.generation = -1


_pool = _Pool()
_generation = 0
_last_time: tuple[int, str] = (-1, "")  # (millisecond, its 10 characters): one tuple, swapped whole


def _forked() -> None:
    global _generation
    _generation += 1  # every pool inherited from the parent is stale in the child


os.register_at_fork(after_in_child=_forked)


def _random_chars() -> str:
    """16 characters of 5 random bits each, from this thread's pool of the kernel's random bytes."""
    pool = _pool
    at = pool.at
    if at + _RANDOM_CHARS > len(pool.data) or pool.generation != _generation:
        pool.data, pool.generation, at = os.urandom(POOL_BYTES), _generation, 0
    pool.at = at + _RANDOM_CHARS
    return pool.data[at : at + _RANDOM_CHARS].translate(_BYTE_TO_CHAR).decode()


def _encode(value: int, pairs: int) -> str:
    """The low ``10 * pairs`` bits of ``value`` as ``2 * pairs`` characters, most significant first."""
    table = _PAIRS
    return "".join([table[(value >> shift) & 1023] for shift in range(10 * (pairs - 1), -1, -10)])


def _time_chars(now: float) -> str:
    global _last_time
    ms = int(now * 1000) & _MASK_48
    last = _last_time
    if last[0] == ms:
        return last[1]
    chars = _encode(ms, 5)
    _last_time = (ms, chars)
    return chars


def new_id(now: float, randbits: int | None = None) -> str:
    """A 26-character id that sorts by ``now`` (seconds since the epoch)."""
    if randbits is None:
        return _time_chars(now) + _random_chars()
    return _time_chars(now) + _encode(randbits & _MASK_80, 8)
