"""What is particular to the Redis backends: leases and takeover, XDEL on ack, recovery after Redis is killed.

Leases are timed by the Redis server's clock (a pending entry's idle time), which no injected clock reaches:
the tests that wait out a lease sleep in real time, with ack_wait cut to fractions of a second.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, cast

import provide_redis
import pytest
from backend_support import appends, make_event
from providers import namespace, require
from redis.asyncio import Redis

from tidings.backends.envelope import encode_live
from tidings.backends.redis import RedisBus, RedisEventLog
from tidings.backends.redis import bus as bus_module
from tidings.backends.redis.log import GROUP, HOLDER
from tidings.backends.sql.sqlite import SqliteStore
from tidings.core.models import LiveMessage
from tidings.errors import InvalidInputError, UnavailableError
from tidings.ports import Delivery, EventLog
from tidings.settings import Settings
from tidings.testing import FakeClock

PROMPT = 5.0  # seconds: how soon a call must fail when Redis is down


def ids(deliveries: list[Delivery]) -> list[str]:
    return [d.event.id for d in deliveries]


async def drain(log: EventLog) -> list[Delivery]:
    got: list[Delivery] = []
    for _ in range(100):  # bounded
        batch = await log.read(1000, 0.3)
        if not batch:
            return got
        got += batch
    raise AssertionError("the log never ran dry")


class Inbox:
    """A bus handler that remembers what it got."""

    def __init__(self) -> None:
        self.messages: list[LiveMessage] = []

    def __call__(self, message: LiveMessage) -> None:
        self.messages.append(message)


def message(seq: int, user: str = "alice") -> LiveMessage:
    return LiveMessage("app1", user, seq, b'{"seq": %d}' % seq)


# --- the shared server ---------------------------------------------------------------------------------


@pytest.fixture
async def ns() -> AsyncIterator[str]:
    await require(provide_redis)
    name = namespace()
    yield name
    await provide_redis.cleanup(name)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    """Where the Idempotency-Keys live (the log keeps none itself)."""
    settings = Settings(data=str(tmp_path), sqlite_synchronous="NORMAL")
    opened = await SqliteStore.open(settings.store_url, settings, FakeClock())
    yield opened
    await opened.close()


@pytest.fixture
async def raw() -> AsyncIterator[Redis]:
    """A plain client, to look at the keys or play a misbehaving peer."""
    client = Redis.from_url(provide_redis.URL)
    yield client
    await client.aclose()


def log_settings(ns: str, ack_wait: float = provide_redis.ACK_WAIT) -> Settings:
    return Settings(namespace=ns, ack_wait=ack_wait, log_lease=provide_redis.LEASE)


async def open_log(ns: str, store: SqliteStore, ack_wait: float = provide_redis.ACK_WAIT) -> RedisEventLog:
    log = await RedisEventLog.open(provide_redis.URL, log_settings(ns, ack_wait), store)
    return cast(RedisEventLog, log.inner)  # type: ignore[attr-defined]


async def test_a_former_holders_pending_entries_come_first_in_order(
    ns: str, store: SqliteStore, raw: Redis
) -> None:
    """Entries a crashed holder of the partition had read (or a worker of an earlier version, under a name of
    its own) are handed to the next holder before anything newer, in order."""
    log = await open_log(ns, store)
    await log.append(appends(*(make_event(f"e{i}") for i in range(3))))
    stream = log.stream_of(make_event("e0"))
    await raw.xreadgroup(GROUP, HOLDER, {stream: ">"}, count=2)  # the dead holder: e0, e1
    await raw.xreadgroup(GROUP, "old-worker", {stream: ">"}, count=1)  # an earlier version's worker: e2
    await log.append(appends(make_event("e3")))
    assert ids(await drain(log)) == ["e0", "e1", "e2", "e3"]
    await log.close()


async def test_a_partition_lost_while_a_read_waits_for_redis_does_not_stop_the_reader(
    ns: str, store: SqliteStore
) -> None:
    """The lease round runs while a read waits for Redis. Seen in CI (issue 13): a round dropped a partition
    whose pending entries the read was asking for, the read's reply found no position to update, and the
    KeyError ended the worker's task, while the round went on renewing its other leases: those partitions were
    never read again. A stale reply is dropped; the partition comes back, and its events with it."""
    log = await open_log(ns, store)
    await log.append(appends(*(make_event(f"e{i}") for i in range(4))))
    stream = log.stream_of(make_event("e0"))
    partition = next(n for (lane, n), key in log.streams.items() if key == stream)
    xreadgroup = log._client.xreadgroup
    dropped: list[int] = []

    async def xreadgroup_while_the_round_drops_the_partition(*args: Any, **kwargs: Any) -> Any:
        reply = await xreadgroup(*args, **kwargs)
        if not dropped and log._partitions is not None and stream in args[2]:
            dropped.append(partition)
            await log._partitions._drop(partition)  # the round saw its lease lost meanwhile
        return reply

    log._client.xreadgroup = xreadgroup_while_the_round_drops_the_partition  # type: ignore[method-assign]
    got: list[Delivery] = []
    for _ in range(20):  # bounded: the lease runs out, the round takes the partition again
        got += await log.read(10, 0.5)
        if len(got) >= 4:
            break
    assert dropped == [partition]
    assert ids(got) == ["e0", "e1", "e2", "e3"]
    await log.close()


async def test_a_long_batch_stays_with_its_worker_until_acked_or_closed(ns: str, store: SqliteStore) -> None:
    """A worker busy for longer than ack_wait keeps its batch; when it shuts down, another gets it at once."""
    busy, idle = await open_log(ns, store), await open_log(ns, store)
    await busy.append(appends(make_event("e0"), make_event("e1")))
    assert ids(await busy.read(10, 1.0)) == ["e0", "e1"]
    await asyncio.sleep(
        2.5 * provide_redis.ACK_WAIT
    )  # the lease is renewed meanwhile (server-side idle time)
    assert await idle.read(10, 0.3) == []
    await busy.close()  # releases the partition: ``idle`` takes it at its next lease round, pending first
    got: list[Delivery] = []
    for _ in range(5):  # bounded
        got += await idle.read(10, 1.0)
        if len(got) >= 2:
            break
    assert ids(got) == ["e0", "e1"]
    await idle.close()


async def test_acked_events_leave_redis(ns: str, store: SqliteStore, raw: Redis) -> None:
    """Redis holds only the events not acked yet, whatever order the acks come in."""
    log = await open_log(ns, store)
    await log.append(appends(*(make_event(f"e{i}") for i in range(5))))
    got = await log.read(10, 1.0)
    await log.ack([got[3], got[0], got[1]])
    assert await raw.xlen(log.stream_of(got[0].event)) == 2
    assert await log.lag() == 2
    await log.ack([got[4], got[2]])
    assert await raw.xlen(log.stream_of(got[0].event)) == 0
    assert await log.lag() == 0
    await log.close()


async def test_a_read_woken_by_several_lanes_hands_out_no_more_than_asked(
    ns: str, store: SqliteStore
) -> None:
    """A waiting worker asking for one event gets one; the other lane's event comes next, exactly once."""
    log = await open_log(ns, store)
    reader = asyncio.create_task(log.read(1, 5.0))
    await asyncio.sleep(0.1)  # let the read block
    await log.append(appends(make_event("h", priority="high"), make_event("l", priority="low")))
    first = await reader
    assert len(first) == 1
    rest = await drain(log)
    assert sorted(ids(first + rest)) == ["h", "l"]
    await log.close()


@pytest.mark.serial  # a bound of 0.5 s on the wall clock
async def test_a_surplus_from_a_blocking_read_is_handed_out_next(ns: str, store: SqliteStore) -> None:
    """When one blocking XREADGROUP returns several lanes at once, what exceeds max_items is not stranded."""
    # Redis 7.0 wakes a blocked read with the first stream that got data only (7.2 re-runs the command and
    # returns all of them); a blocking read issued while data waits in two lanes returns both on any version.
    log = await open_log(ns, store)
    assert await log.read(1, 0.0) == []  # takes the partitions
    await log.append(appends(make_event("l", priority="low"), make_event("h", priority="high")))
    assert ids(await log._wait_for_new(1, 0.1)) == ["h"]
    started = time.monotonic()
    assert ids(await log.read(10, 1.0)) == ["l"]
    assert time.monotonic() - started < 0.5  # handed back at once, not after ack_wait
    await log.close()


async def test_streams_lost_by_redis_are_recreated_and_the_log_goes_on(
    ns: str, store: SqliteStore, raw: Redis
) -> None:
    """After Redis lost the streams (a restart without persistence), the same log object works on."""
    log = await open_log(ns, store)
    await log.append(appends(make_event("lost")))
    await raw.delete(*log.streams.values())
    assert await log.lag() == 0
    await raw.delete(*log.streams.values())
    await log.append(appends(make_event("e1")))
    assert ids(await drain(log)) == ["e1"]
    await log.close()


async def test_worker_restarts_do_not_pile_up_consumers(ns: str, store: SqliteStore, raw: Redis) -> None:
    """Every holder of a partition reads under the one consumer name: restarts add no consumers in Redis."""
    for _ in range(3):
        log = await open_log(ns, store)
        await log.append(appends(make_event("e1")))
        await log.ack(await log.read(10, 1.0))
        await log.close()
    consumers = await raw.xinfo_consumers(log.stream_of(make_event("e1")), GROUP)
    assert [c["name"] for c in consumers] == [HOLDER.encode()]


async def test_an_event_of_unknown_priority_is_refused_in_its_slot(ns: str, store: SqliteStore) -> None:
    """A bad item fails alone; the rest of the batch is appended."""
    log = await open_log(ns, store)
    bad = make_event("bad", priority="urgent")  # type: ignore[arg-type]
    result = await log.append(appends(bad, make_event("ok")))
    assert isinstance(result[0], InvalidInputError)
    assert ids(await drain(log)) == ["ok"]
    await log.close()


async def test_foreign_and_misaddressed_bus_messages_are_dropped(ns: str, raw: Redis) -> None:
    """Junk on a user's channel, or a message for another user, never reaches that user's handler."""
    bus = await RedisBus.open(provide_redis.URL, Settings(namespace=ns))
    got = Inbox()
    await bus.subscribe("app1", "alice", got)
    channel = cast(RedisBus, bus).channel("app1", "alice")
    await raw.publish(channel, b"not an envelope")
    await raw.publish(channel, encode_live(message(1, user="bob")))
    await bus.publish([message(2)])
    for _ in range(100):  # bounded wait for the good one, which was published last
        if got.messages:
            break
        await asyncio.sleep(0.02)
    assert got.messages == [message(2)]
    await bus.close()


# --- our own server, killed and restarted -------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """A redis-server of this test's own: AOF on, fsync before every reply, data in ``data_dir``."""

    def __init__(self, data_dir: Path) -> None:
        self.port = free_port()
        self.data_dir = data_dir
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        command += ["--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.data_dir)]
        self._process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:  # bounded: ready once it answers PING (AOF loaded)
            ping = subprocess.run(
                ["redis-cli", "-p", str(self.port), "ping"], capture_output=True, text=True, check=False
            )
            if ping.stdout.strip() == "PONG":
                return
            time.sleep(0.02)
        raise AssertionError("redis-server did not start")

    def kill(self) -> None:
        """SIGKILL: no shutdown, no last write; only what was fsynced survives."""
        if self._process is not None:
            self._process.kill()
            self._process.wait(timeout=10)
            self._process = None


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        if os.environ.get("TIDINGS_TEST_REQUIRE"):
            pytest.fail("redis-server is not installed")
        pytest.skip("redis-server is not installed")
    data_dir = tmp_path / "redis"
    data_dir.mkdir()
    server = RedisServer(data_dir)
    server.start()
    yield server
    server.kill()


async def promptly_unavailable(call: object) -> None:
    """``call`` (an awaitable) raises UnavailableError within PROMPT seconds."""
    started = time.monotonic()
    with pytest.raises(UnavailableError):
        await call  # type: ignore[misc]
    assert time.monotonic() - started < PROMPT


@pytest.mark.serial  # Redis killed; calls fail within PROMPT s
async def test_kill_9_loses_nothing_and_the_same_objects_work_again(
    own_redis: RedisServer, store: SqliteStore
) -> None:
    """Redis killed: calls fail promptly; Redis back: every accepted event is there, log and bus work on."""
    settings = Settings(namespace="killtest", ack_wait=provide_redis.ACK_WAIT)
    log = await RedisEventLog.open(own_redis.url, settings, store)
    bus = await RedisBus.open(own_redis.url, settings)
    live = Inbox()
    await bus.subscribe("app1", "alice", live)
    accepted = [make_event(f"e{i:02d}", priority="high" if i % 3 == 0 else "normal") for i in range(30)]
    await log.append(appends(*accepted[:10]))
    await log.append(appends(*(make_event(e.id, key=f"k{e.id}") for e in accepted[10:])))
    held = await log.read(10, 1.0)
    await log.ack(held[:5])

    own_redis.kill()
    await promptly_unavailable(log.append(appends(make_event("refused"))))
    await promptly_unavailable(log.read(10, 0.5))
    await promptly_unavailable(log.ack(held[5:]))
    await promptly_unavailable(log.lag())
    await promptly_unavailable(bus.publish([message(1)]))
    await promptly_unavailable(bus.subscribe("app1", "bob", Inbox()))

    await asyncio.to_thread(own_redis.start)  # the bus keeps trying to reconnect meanwhile
    await log.ack(held[5:])  # deliveries handed out before the outage are still good
    await log.append(appends(make_event("after")))
    rest = await drain(log)
    assert sorted(ids(rest)) == sorted([e.id for e in accepted if e.id not in ids(held)] + ["after"])
    await log.ack(rest)
    assert await log.lag() == 0
    for seq in range(2, 200):  # bounded: the bus reconnects with backoff (2 s at most between attempts)
        await bus.publish([message(seq)])
        if live.messages:
            break
        await asyncio.sleep(0.05)
    assert live.messages, "the bus did not resubscribe"
    assert live.messages[0].seq >= 2
    await bus.close()
    await log.close()


async def test_a_large_publish_arrives_whole_and_in_order_even_before_the_script_is_loaded(
    ns: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bus publishes a batch through one Lua script per ``PUBLISH_CHUNK`` messages: more than a chunk
    arrives complete, in order, each message on its own user's channel; a Redis that does not know the script
    yet (restarted, flushed; here: a script of this test's own) gets it loaded by the publish itself."""
    script = f"{bus_module.PUBLISH_SCRIPT} -- {ns}"
    monkeypatch.setattr(bus_module, "PUBLISH_SCRIPT", script)
    monkeypatch.setattr(bus_module, "PUBLISH_SHA", hashlib.sha1(script.encode()).hexdigest())
    monkeypatch.setattr(bus_module, "PUBLISH_CHUNK", 7)
    bus = await RedisBus.open(provide_redis.URL, Settings(namespace=ns))
    alice, bob = Inbox(), Inbox()
    await bus.subscribe("app1", "alice", alice)
    await bus.subscribe("app1", "bob", bob)
    await bus.publish([message(seq, user="alice" if seq % 3 else "bob") for seq in range(1, 31)])
    for _ in range(100):  # bounded wait for the last one
        if len(alice.messages) + len(bob.messages) == 30:
            break
        await asyncio.sleep(0.02)
    assert [m.seq for m in alice.messages] == [seq for seq in range(1, 31) if seq % 3]
    assert [m.seq for m in bob.messages] == [seq for seq in range(1, 31) if not seq % 3]
    await bus.close()
