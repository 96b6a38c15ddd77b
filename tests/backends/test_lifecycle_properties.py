"""Properties of the life of a notification on the SQLite store, for random sequences of operations:

- an aggregate's actors and count always equal what a replay of its surviving events gives;
- the O(1) counters always equal a COUNT of the rows.

One store serves every example (a fresh user each), driven on one event loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from backend_support import make_event
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tidings.backends.sql import lifecycle
from tidings.backends.sql.sqlite import SqliteStore
from tidings.core.aggregation import merge_actors
from tidings.core.models import InboxWrite
from tidings.settings import Settings
from tidings.testing import FakeClock

ACTORS = ("ann", "bob", "cat", "dan", "eve")
MAX_ACTORS = 3


@dataclasses.dataclass
class Harness:
    runner: asyncio.Runner
    store: SqliteStore
    clock: FakeClock
    users: Iterator[int]

    def run(self, coro: Any) -> Any:
        return self.runner.run(coro)


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    path: Path = tmp_path_factory.mktemp("life")
    runner = asyncio.Runner()
    clock = FakeClock()
    settings = Settings(data=str(path), sqlite_synchronous="OFF")
    store = runner.run(SqliteStore.open(settings.store_url, settings, clock))
    yield Harness(runner, store, clock, itertools.count())
    runner.run(store.close())
    runner.close()


def like(event_id: str, actor: str, user: str) -> InboxWrite:
    event = dataclasses.replace(
        make_event(event_id, recipients=(user,)), actor={"id": actor, "name": actor}, group_key="post:42"
    )
    return InboxWrite("app1", user, event, aggregate_window=1e9, max_actors=MAX_ACTORS)


def replay(actors: list[str]) -> tuple[list[str], int]:
    """What writing these likes one after the other shows: the latest distinct actors, newest first."""
    merged: tuple[Any, ...] = ()
    for actor in actors:
        merged = merge_actors({"id": actor, "name": actor}, merged, MAX_ACTORS)
    return [a["id"] for a in merged], len(actors)


operations = st.lists(
    st.one_of(
        st.tuples(st.just("like"), st.sampled_from(ACTORS)),
        st.tuples(st.just("retract"), st.integers(0, 30)),
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=operations)
def test_an_aggregate_always_equals_a_replay_of_its_surviving_events(
    harness: Harness, ops: list[Any]
) -> None:
    user = f"p{next(harness.users)}"
    inbox = harness.store.inbox
    groups: list[list[tuple[str, str]]] = []  # the model: each aggregate's likes (event id, actor), in order
    retracted: set[str] = set()

    def alive(group: list[tuple[str, str]]) -> list[str]:
        return [actor for event_id, actor in group if event_id not in retracted]

    for n, (op, arg) in enumerate(ops):
        if op == "like":
            event_id = f"{user}-e{n}"
            harness.run(inbox.write([like(event_id, arg, user)]))
            # A like joins the shown aggregate; once all of its likes are retracted, the next one starts anew.
            if not groups or not alive(groups[-1]):
                groups.append([])
            groups[-1].append((event_id, arg))
        else:
            every = [event_id for group in groups for event_id, _ in group]
            if every:
                event_id = every[arg % len(every)]
                harness.run(inbox.retract("app1", event_ids=[event_id], cancel_keys=[]))
                retracted.add(event_id)
    shown = harness.run(inbox.page("app1", user, after=0, before=None, limit=100, unread_only=False))
    got = [
        ([a["id"] for a in body["actors"]], body["count"])
        for body in map(orjson.loads, (i.payload for i in shown))
    ]
    assert got == [replay(alive(group)) for group in groups if alive(group)]
    counted = harness.run(harness.store.db.read(lambda conn: lifecycle.count_rows(conn, "app1", user)))
    assert harness.run(inbox.tallies("app1", user)) == counted


state_ops = st.lists(
    st.one_of(
        st.tuples(st.just("write"), st.booleans()),
        st.tuples(
            st.sampled_from(["archive", "unarchive", "unread", "delete"]), st.lists(st.integers(1, 12))
        ),
        st.tuples(st.sampled_from(["read", "seen"]), st.lists(st.integers(1, 12))),
        st.tuples(st.just("retract"), st.integers(0, 12)),
    ),
    min_size=1,
    max_size=30,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=state_ops)
def test_the_counters_always_equal_a_count_of_the_rows(harness: Harness, ops: list[Any]) -> None:
    user = f"c{next(harness.users)}"
    inbox = harness.store.inbox
    written: list[str] = []
    for n, (op, arg) in enumerate(ops):
        if op == "write":
            event_id = f"{user}-e{n}"
            write = (
                like(event_id, "ann", user)
                if arg
                else InboxWrite("app1", user, make_event(event_id, recipients=(user,)))
            )
            harness.run(inbox.write([write]))
            written.append(event_id)
        elif op in ("read", "seen"):
            if arg:
                harness.run(inbox.mark("app1", user, op, seqs=arg, up_to=None, at=harness.clock.time()))
        elif op == "retract":
            if written:
                harness.run(inbox.retract("app1", event_ids=[written[arg % len(written)]], cancel_keys=[]))
        elif arg:
            harness.run(inbox.change("app1", user, op, arg))
        counted = harness.run(harness.store.db.read(lambda conn: lifecycle.count_rows(conn, "app1", user)))
        assert harness.run(inbox.tallies("app1", user)) == counted
