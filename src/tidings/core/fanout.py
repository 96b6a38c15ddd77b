"""Fan-out planning, pure: which inbox rows one event makes, and how large lists are cut into chunks."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import islice
from typing import TypeVar

from tidings.core.models import Event, InboxWrite

T = TypeVar("T")


def plan_writes(event: Event, recipients: Iterable[str]) -> list[InboxWrite]:
    """One inbox write per distinct recipient, in the order each first appears.

    A recipient named twice in one event gets one notification: the inbox is idempotent on
    (app, user, event) anyway, but a duplicate in one batch would only cost a wasted write.
    """
    return [InboxWrite(app=event.app, user=user, event=event) for user in dict.fromkeys(recipients)]


def chunked(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive lists of ``size`` items (the last one shorter), reading ``items`` lazily.

    Raises ``ValueError`` at once, not at the first ``next()``, when ``size`` < 1.
    """
    if size < 1:
        raise ValueError("chunk size must be >= 1")
    return _chunks(iter(items), size)


def _chunks(iterator: Iterator[T], size: int) -> Iterator[list[T]]:
    while chunk := list(islice(iterator, size)):
        yield chunk
