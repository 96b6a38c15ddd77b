"""What is particular to the PostgreSQL store: concurrent writers on separate connections, migrations raced by
processes, the schema per namespace, opt-in hash partitions, retries after a deadlock, and a database that
cannot be reached. The shared behaviour is in the contract suites (``store`` fixture)."""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import provide_postgres
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from backend_support import inbox_write
from providers import namespace, require
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.backends import open_store
from tidings.backends.sql.postgres import PostgresStore, partitions_from_env
from tidings.backends.sql.postgres.arrays import copy_records
from tidings.backends.sql.postgres.decisions import record_decisions
from tidings.core.rules import DELIVER, Decision
from tidings.db import migrate
from tidings.db.schema import metadata
from tidings.errors import ConfigError, ConflictError, InvalidInputError, UnavailableError
from tidings.settings import Settings
from tidings.testing import FakeClock

URL = provide_postgres.URL
HEAD = ScriptDirectory.from_config(migrate.config()).get_current_head()


@pytest.fixture
async def ns() -> AsyncIterator[str]:
    """A fresh namespace (schema) on the shared server, dropped after the test."""
    await require(provide_postgres)
    name = namespace()
    yield name
    await provide_postgres.cleanup(name)


async def open_pg(ns: str, partitions: int | None = None) -> PostgresStore:
    return await PostgresStore.open(URL, Settings(namespace=ns), FakeClock(), partitions=partitions)


async def raw(ns: str) -> Any:
    """A plain asyncpg connection into the namespace, for looking behind the store's back."""
    return await asyncpg.connect(provide_postgres.DSN, server_settings={"search_path": ns})


async def test_four_writers_on_their_own_connections_keep_every_users_seqs_gap_free(ns: str) -> None:
    """Four workers writing 1,000 rows each for the same users at once: each user's seqs are 1..n, once each,
    and an event delivered to several workers at once is stored once."""
    stores = [await open_pg(ns) for _ in range(4)]
    users = [f"u{i}" for i in range(12)]

    async def writer(index: int, store: PostgresStore) -> dict[tuple[str, str], int]:
        shuffled = random.Random(index)
        written: dict[tuple[str, str], int] = {}
        for batch in range(10):
            # Half the rows are the same (user, event) in every writer: a redelivery racing the first one.
            shared = [inbox_write(f"s{batch}-{i}", users[i % len(users)]) for i in range(50)]
            own = [inbox_write(f"w{index}-{batch}-{i}", shuffled.choice(users)) for i in range(50)]
            writes = shared + own
            shuffled.shuffle(writes)
            for n in await store.inbox.write(writes):
                written[(n.user, n.event_id)] = n.seq
        return written

    try:
        results = await asyncio.gather(*(writer(i, s) for i, s in enumerate(stores)))
        for user in users:
            rows = await stores[0].inbox.backlog("app1", user, 0, 10_000)
            assert [n.seq for n in rows] == list(range(1, len(rows) + 1))
            assert len({n.event_id for n in rows}) == len(rows)
            assert await stores[0].inbox.last_seq("app1", user) == len(rows)
        stored = {
            (n.user, n.event_id): n.seq
            for u in users
            for n in await stores[0].inbox.backlog("app1", u, 0, 10_000)
        }
        for written in results:  # every writer was answered with the row that is stored
            assert all(stored[key] == seq for key, seq in written.items())
        assert len(stored) == len(set().union(*results)) == 10 * 50 + 4 * 10 * 50
    finally:
        for store in stores:
            await store.close()


CHILD = """
import asyncio, sys
from tidings.backends.sql.postgres import PostgresStore
from tidings.settings import Settings

async def main(url, ns, user):
    print("ready", flush=True)
    sys.stdin.readline()  # the parent lets every child go at once
    store = await PostgresStore.open(url, Settings(namespace=ns))
    try:
        await store.topics.subscribe("app1", "started", user)
        print(store.db.found_revision, flush=True)
    finally:
        await store.close()

asyncio.run(main(*sys.argv[1:]))
"""


async def test_two_processes_opening_a_fresh_namespace_at_once_migrate_it_once(ns: str) -> None:
    """Two processes started together on a new namespace both come up; one migrated it, the other found it done."""
    children = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", CHILD, URL, ns, user, stdin=-1, stdout=-1, stderr=-1
        )
        for user in ("p1", "p2")
    ]
    for child in children:
        assert child.stdout is not None
        assert await asyncio.wait_for(child.stdout.readline(), 30) == b"ready\n"
    outputs = await asyncio.wait_for(asyncio.gather(*(child.communicate(b"go\n") for child in children)), 60)
    assert [child.returncode for child in children] == [0, 0], [err.decode() for _, err in outputs]
    assert sorted(out.decode().strip() for out, _ in outputs) == sorted(["None", HEAD])
    store = await open_pg(ns)
    try:
        assert await store.topics.page("app1", "started", None, 10) == ["p1", "p2"]
    finally:
        await store.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.serial  # a bound of 5 s on the wall clock
async def test_an_unreachable_database_is_unavailable_within_seconds() -> None:
    """Nothing listening at the address: opening the store fails with ``UnavailableError``, quickly."""
    started = time.monotonic()
    with pytest.raises(UnavailableError) as caught:
        await PostgresStore.open(f"postgresql://postgres@127.0.0.1:{free_port()}/test", Settings())
    assert time.monotonic() - started < 5
    assert caught.value.__cause__ is not None


def pg_bin() -> Path | None:
    """The directory of ``initdb`` and ``pg_ctl`` (Debian keeps them off the PATH)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    return found[-1].parent if found else None


class OwnServer:
    """A PostgreSQL server of this test's own (a temp data dir, a free port), stopped and started at will."""

    def __init__(self, bindir: Path, root: Path) -> None:
        self.bindir = bindir
        self.data = root / "data"
        self.port = free_port()
        self.options = f"-p {self.port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        self._run(
            "pg_ctl", "-D", str(self.data), "-o", self.options, "-l", str(self.data / "log"), "-w", "start"
        )

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def _run(self, tool: str, *args: str) -> None:
        # The server refuses to run as root: as root, run it as the postgres user.
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run([*prefix, str(self.bindir / tool), *args], check=True, capture_output=True, timeout=60)


@pytest.fixture
def own_server() -> Iterator[OwnServer]:
    bindir = pg_bin()
    if bindir is None:
        pytest.skip("no PostgreSQL server binaries to start a server of our own")
    root = Path(tempfile.mkdtemp(prefix="tidings-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    server = OwnServer(bindir, root)
    server.start()
    try:
        yield server
    finally:
        if (server.data / "postmaster.pid").exists():
            server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.serial  # a server stopped; calls fail within 5 s
async def test_a_restarted_database_is_unavailable_then_works_again_without_reopening(
    own_server: OwnServer,
) -> None:
    """While the database is down, calls fail quickly with ``UnavailableError``; once it is back, the same
    store object works again (its dead pooled connections are replaced) and nothing committed is lost."""
    store = await PostgresStore.open(own_server.url, Settings(), FakeClock())
    try:
        await store.inbox.write([inbox_write("e1")])
        own_server.stop()
        started = time.monotonic()
        with pytest.raises(UnavailableError):
            await store.ping()
        with pytest.raises(UnavailableError):
            await store.inbox.write([inbox_write("e2")])
        assert time.monotonic() - started < 5
        own_server.start()
        await store.ping()
        written = await store.inbox.write([inbox_write("e2")])
        assert [n.seq for n in written] == [2]
        assert [n.event_id for n in await store.inbox.backlog("app1", "alice", 0, 10)] == ["e1", "e2"]
    finally:
        await store.close()


async def test_the_migrated_namespace_is_exactly_the_schema(ns: str) -> None:
    """The tables are created in the namespace's own schema, exactly as the code's metadata describes them."""
    store = await open_pg(ns)

    def compare(conn: Connection) -> list[Any]:
        return list(compare_metadata(MigrationContext.configure(conn), metadata))

    async def inspect(conn: AsyncConnection) -> tuple[list[Any], object, object]:
        diff = await conn.run_sync(compare)
        version = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar()
        where = (await conn.execute(text("SELECT to_regclass('inbox')::text, current_schema()"))).one()
        return diff, version, tuple(where)

    try:
        diff, version, where = await store.db.read(inspect)
        assert (diff, version, where) == ([], HEAD, ("inbox", ns))
        public = await raw("public")
        try:
            assert await public.fetchval("SELECT to_regclass('public.inbox')") is None
        finally:
            await public.close()
    finally:
        await store.close()


async def test_reopening_a_migrated_namespace_keeps_its_data(ns: str) -> None:
    """Every process migrates on start: on a current namespace that changes nothing."""
    store = await open_pg(ns)
    await store.inbox.write([inbox_write("e1")])
    await store.close()
    store = await open_pg(ns)
    try:
        assert store.db.found_revision == HEAD
        assert await store.inbox.last_seq("app1", "alice") == 1
    finally:
        await store.close()


async def test_partitions_opt_in_makes_the_per_user_tables_hash_partitioned(ns: str) -> None:
    """With partitions asked for, a fresh namespace's inbox and counters are split by user hash and still work."""
    store = await open_pg(ns, partitions=4)
    try:
        await store.inbox.write([inbox_write(f"e{i}", f"user{i % 7}") for i in range(50)])
        assert [n.seq for n in await store.inbox.backlog("app1", "user3", 0, 100)] == list(range(1, 8))
        conn = await raw(ns)
        try:
            kinds = await conn.fetch(
                "SELECT c.relname, c.relkind::text, count(i.inhrelid) AS parts FROM pg_class c"
                " LEFT JOIN pg_inherits i ON i.inhparent = c.oid"
                " WHERE c.oid IN ('inbox'::regclass, 'user_seqs'::regclass) GROUP BY 1, 2 ORDER BY 1"
            )
            spread = await conn.fetchval("SELECT count(DISTINCT tableoid) FROM inbox")
        finally:
            await conn.close()
        assert [tuple(row) for row in kinds] == [("inbox", "p", 4), ("user_seqs", "p", 4)]
        assert spread > 1  # 7 users over 4 partitions
    finally:
        await store.close()


async def test_partitions_leave_a_namespace_with_rows_alone(ns: str) -> None:
    """Asking for partitions on a namespace that holds notifications changes nothing and loses nothing."""
    store = await open_pg(ns, partitions=0)
    await store.inbox.write([inbox_write("e1")])
    await store.close()
    store = await open_pg(ns, partitions=4)
    try:
        assert await store.inbox.last_seq("app1", "alice") == 1
        conn = await raw(ns)
        try:
            assert (
                await conn.fetchval("SELECT relkind::text FROM pg_class WHERE oid = 'inbox'::regclass") == "r"
            )
        finally:
            await conn.close()
    finally:
        await store.close()


async def test_a_deadlock_victim_is_retried(ns: str) -> None:
    """A write chosen as a deadlock's victim is run again, and succeeds, instead of failing the request."""
    store = await open_pg(ns)
    other = await raw(ns)
    attempts = 0
    first_lock_taken = asyncio.Event()

    async def work(conn: AsyncConnection) -> int:
        nonlocal attempts
        attempts += 1
        await conn.execute(text("SET LOCAL deadlock_timeout = '100ms'"))  # this side detects it: the victim
        await conn.execute(text("SELECT * FROM user_seqs WHERE user_id = 'a' FOR UPDATE"))
        first_lock_taken.set()
        await conn.execute(text("SELECT * FROM user_seqs WHERE user_id = 'b' FOR UPDATE"))
        return attempts

    try:
        await other.execute("INSERT INTO user_seqs VALUES ('app1', 'a', 0), ('app1', 'b', 0)")
        tx = other.transaction()
        await tx.start()
        await other.execute("SET LOCAL deadlock_timeout = '10s'")
        await other.execute("SELECT * FROM user_seqs WHERE user_id = 'b' FOR UPDATE")
        writing = asyncio.create_task(store.db.write(work))
        await asyncio.wait_for(first_lock_taken.wait(), 10)
        # Waits for 'a' while the store's transaction waits for 'b'; the store's side is aborted and retried.
        await other.execute("SELECT * FROM user_seqs WHERE user_id = 'a' FOR UPDATE")
        await tx.commit()
        assert await asyncio.wait_for(writing, 10) == 2
    finally:
        await other.close()
        await store.close()


USAGE = ("app", "user_id", "channel", "window_start", "count")


async def test_a_copy_chosen_as_a_deadlock_victim_is_retried(ns: str) -> None:
    """asyncpg's errors from a ``COPY`` (the inbox write path's rows, deliveries and decisions) are handled as
    a statement's: a deadlock met inside the COPY runs the transaction again."""
    store = await open_pg(ns)
    other = await raw(ns)
    attempts = 0
    first_lock_taken = asyncio.Event()

    async def work(conn: AsyncConnection) -> int:
        nonlocal attempts
        attempts += 1
        await conn.execute(text("SET LOCAL deadlock_timeout = '100ms'"))  # this side detects it: the victim
        await conn.execute(text("SELECT * FROM user_seqs WHERE user_id = 'a' FOR UPDATE"))
        first_lock_taken.set()
        user = "b" if attempts == 1 else "c"  # 'b' is the other side's uncommitted row: the COPY waits for it
        await copy_records(conn, "channel_usage", USAGE, [("app1", user, "web_push", 0.0, 1)])
        return attempts

    try:
        await other.execute("INSERT INTO user_seqs VALUES ('app1', 'a', 0)")
        tx = other.transaction()
        await tx.start()
        await other.execute("SET LOCAL deadlock_timeout = '10s'")
        await other.execute("INSERT INTO channel_usage VALUES ('app1', 'b', 'web_push', 0.0, 1)")
        writing = asyncio.create_task(store.db.write(work))
        await asyncio.wait_for(first_lock_taken.wait(), 10)
        await other.execute("SELECT * FROM user_seqs WHERE user_id = 'a' FOR UPDATE")
        await tx.commit()
        assert await asyncio.wait_for(writing, 10) == 2
    finally:
        await other.close()
        await store.close()


async def test_copy_errors_are_the_store_errors_of_a_statement(ns: str) -> None:
    """A row a COPY cannot store is ``InvalidInputError``, a duplicate ``ConflictError``, a connection lost
    under a COPY ``UnavailableError``; the store works on afterwards."""
    store = await open_pg(ns)
    other = await raw(ns)

    async def copy(conn: AsyncConnection, rows: list[tuple[Any, ...]], kill: bool = False) -> None:
        pid = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar()
        if kill:
            await other.execute("SELECT pg_terminate_backend($1)", pid)
        await copy_records(conn, "channel_usage", USAGE, rows)

    row = ("app1", "alice", "web_push", 0.0, 1)
    try:
        await store.db.write(partial(copy, rows=[row]))
        with pytest.raises(ConflictError):
            await store.db.write(partial(copy, rows=[row]))
        with pytest.raises(InvalidInputError):
            await store.db.write(partial(copy, rows=[("app1", "x" * 256, "web_push", 0.0, 1)]))
        with pytest.raises(UnavailableError):
            await store.db.write(partial(copy, rows=[("app1", "bob", "web_push", 0.0, 1)], kill=True))
        assert await store.inbox.write([inbox_write("e1")])
        assert await other.fetchval("SELECT count(*) FROM channel_usage") == 1
    finally:
        await other.close()
        await store.close()


async def test_decisions_recorded_twice_in_one_transaction_are_kept_once(ns: str) -> None:
    """Decisions go through a temporary table the move empties: recording again in the same transaction
    (or after it) inserts only what is new, and the first of a key stays."""
    store = await open_pg(ns)
    first = Decision("app1", "e1", "alice", DELIVER, "recipient", "in_app", 1, 5.0)
    again = Decision("app1", "e1", "alice", DELIVER, "changed", "in_app", 1, 6.0)
    second = Decision("app1", "e2", "alice", DELIVER, "recipient", "in_app", 2, 7.0, {"n": 1})

    async def record_twice(conn: AsyncConnection) -> None:
        await record_decisions(conn, [first])
        await record_decisions(conn, [again, second])

    try:
        await store.db.write(record_twice)
        await store.decisions.record([first, second])
        got = await store.decisions.for_event("app1", "e1", user=None, after=None, limit=10)
        got += await store.decisions.for_event("app1", "e2", user=None, after=None, limit=10)
        assert got == [first, second]
    finally:
        await store.close()


@pytest.mark.parametrize("user", ["nul\x00in-the-middle", "x" * 256])
async def test_a_value_postgres_cannot_store_is_invalid_input(ns: str, user: str) -> None:
    """A user id with a NUL character or over 255 characters is bad input (a 4xx), not a database outage."""
    store = await open_pg(ns)
    try:
        with pytest.raises(InvalidInputError):
            await store.inbox.write([inbox_write("e1", user)])
        with pytest.raises(InvalidInputError):
            await store.inbox.mark("app1", "alice", "read", seqs=None, up_to=2**64, at=0.0)
        assert await store.inbox.write([inbox_write("e1")])  # the store is fine afterwards
    finally:
        await store.close()


async def test_a_closed_store_refuses_work(ns: str) -> None:
    """After close, calls fail with ``UnavailableError`` (a 503), never hang or reconnect."""
    store = await open_pg(ns)
    await store.close()
    await store.close()
    with pytest.raises(UnavailableError):
        await store.inbox.write([inbox_write("e1")])
    with pytest.raises(UnavailableError):
        await store.ping()


@pytest.mark.parametrize("scheme", ["postgresql", "postgresql+asyncpg", "postgres"])
async def test_every_postgres_url_form_opens_through_the_registry(ns: str, scheme: str) -> None:
    """``--store postgresql://…`` and its asyncpg and short spellings all open the PostgreSQL store."""
    url = URL.replace("postgresql", scheme, 1)
    store = await open_store(url, Settings(namespace=ns))
    try:
        assert isinstance(store, PostgresStore)
        await store.ping()
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("url", "ns"),
    [
        ("postgresql+psycopg://postgres@127.0.0.1/test", "tidings"),
        (URL, "bad;name"),
        (URL, "x" * 64),
    ],
)
async def test_unusable_urls_and_namespaces_are_config_errors(url: str, ns: str) -> None:
    """Another driver than asyncpg, or a namespace that is no schema name, is refused with a clear message."""
    with pytest.raises(ConfigError):
        await PostgresStore.open(url, Settings(namespace=ns))


@pytest.mark.parametrize(("raw_value", "expected"), [("", 0), ("8", 8), ("x", None), ("-1", None)])
def test_the_partitions_variable_is_checked(
    monkeypatch: pytest.MonkeyPatch, raw_value: str, expected: int | None
) -> None:
    """``TIDINGS_PG_PARTITIONS`` is a small count; anything else stops the start with a clear message."""
    monkeypatch.setenv("TIDINGS_PG_PARTITIONS", raw_value)
    if expected is None:
        with pytest.raises(ConfigError):
            partitions_from_env()
    else:
        assert partitions_from_env() == expected
