"""Where a live stream starts, decided once when it opens: the client's cursor against the user's ``last_seq``.

A cursor (``after``, ``Last-Event-ID``, ``?after=``) at or below ``last_seq`` resumes there: the backlog after it
comes first. A cursor above ``last_seq`` cannot be honoured: those seqs do not exist (yet) on this server, and
waiting for them would leave the stream silent until the user's seq caught up. Such a stream starts at
``last_seq`` (only what comes next) and the client is told with a ``reset`` frame right after ``ready``: it
drops its cursor (docs/protocol.md). No cursor means "only what comes next", never a reset. A cursor below the
retention floor (those seqs were swept) is reset too, with ``expired``: the stream starts a page before
``last_seq``, so the client gets the latest page, and the reset frame names that start.

The ``epoch`` names one life of a user's stream: it changes when the store is recreated. It is derived from the
app's identity as stored (its name and ``created_at``), so it needs no column of its own: a recreated store
recreates the app, with a new ``created_at``. Its limit: a store restored from a backup keeps the app, hence the
epoch; the cursors of its clients are then ahead of ``last_seq`` and the reset catches them instead.

Pure: no I/O, no clock. The hot path never sees this module.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

EPOCH_CHARS = 16


@dataclass(frozen=True, slots=True)
class Opened:
    """A stream as it opened: the user's ``last_seq`` then, the ``epoch``, and ``start``: the seq the
    connection starts after. ``reset``: the client's cursor was ahead of ``last_seq`` (it must drop it)."""

    last_seq: int
    epoch: str
    start: int
    reset: bool
    expired: bool = False  # the reset is for a cursor below the retention floor (the latest page follows)


def open_at(after: int | None, last_seq: int, epoch: str, *, floor: int = 0, page: int = 0) -> Opened:
    """The start of a stream whose client asked for the seqs after ``after`` (None: only what comes next).

    ``floor``: the highest seq the retention sweep deleted (``core.retention``). A cursor below it asks for
    seqs that are gone: the stream is reset (``expired``) and starts ``page`` seqs before ``last_seq`` (never
    at or below the floor), so the latest page follows as backlog; the reset frame carries ``start``.

    Invariants: ``start <= last_seq`` whenever ``reset`` (never a cursor the server has not reached), and
    ``start == after`` otherwise when a cursor was given.
    """
    if last_seq < 0 or (after is not None and after < 0) or floor < 0 or page < 0:
        raise ValueError("seqs are >= 0")
    if after is not None and after < floor <= last_seq:
        return Opened(last_seq, epoch, max(floor, last_seq - page), True, expired=True)
    if after is None:
        return Opened(last_seq, epoch, last_seq, False)
    if after > last_seq:
        return Opened(last_seq, epoch, last_seq, True)
    return Opened(last_seq, epoch, after, False)


def epoch_of(app: str, created_at: float) -> str:
    """A short, stable name for the app's stream life: a hash of its name and ``created_at`` (hex)."""
    identity = f"{app}\x00{created_at!r}".encode()
    return hashlib.sha256(identity).hexdigest()[:EPOCH_CHARS]
