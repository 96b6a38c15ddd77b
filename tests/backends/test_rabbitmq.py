"""What is particular to RabbitMQ: leases (``ack_wait``) on a broker without them, competing worker processes,
buses in different processes, routing keys, and surviving a lost connection and a broker restart.

The restart test runs its OWN RabbitMQ node (a unique node name, free ports, a temporary data directory) and
stops exactly that node: the shared broker on 5672 is never touched. The reconnect test closes, from the
broker's side, only the connections this test opened (found by their connection names).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aio_pika
import pytest
from backend_support import appends, make_event
from provide_rabbitmq import URL, available, cleanup

from tidings.backends.rabbitmq import RabbitBus, RabbitEventLog
from tidings.backends.rabbitmq.connection import OP_TIMEOUT, live_exchange, routing_key
from tidings.core.models import LiveMessage
from tidings.errors import InvalidInputError, UnavailableError
from tidings.gateway.hub import Hub
from tidings.ports import Appended, Delivery
from tidings.settings import Settings
from tidings.testing import FakeClock

RABBITMQ_SERVER = shutil.which("rabbitmq-server")
RABBITMQCTL = shutil.which("rabbitmqctl")


@pytest.fixture
async def ns() -> AsyncIterator[str]:
    if not await available():
        pytest.skip("RabbitMQ is not reachable")  # the contract suites fail under TIDINGS_TEST_REQUIRE
    name = "t" + secrets.token_hex(5)
    yield name
    await cleanup(name)


def ids(deliveries: list[Delivery]) -> list[str]:
    return [d.event.id for d in deliveries]


async def drain(log: RabbitEventLog) -> list[Delivery]:
    got: list[Delivery] = []
    for _ in range(100):
        batch = await log.read(100, 0.05)
        if not batch:
            return got
        got.extend(batch)
    raise AssertionError("the log never ran dry")


class Received:
    """A bus handler that collects messages and can wait (bounded) for one with a given seq."""

    def __init__(self) -> None:
        self.seqs: list[int] = []
        self._arrived = asyncio.Event()

    def __call__(self, message: LiveMessage) -> None:
        self.seqs.append(message.seq)
        self._arrived.set()

    async def wait_for(self, seq: int, timeout: float = 2.0) -> bool:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while seq not in self.seqs:
                    self._arrived.clear()
                    await self._arrived.wait()
        return seq in self.seqs


def live(seq: int, user: str = "alice", app: str = "app1") -> LiveMessage:
    return LiveMessage(app, user, seq, b'{"seq": %d}' % seq)


# --- the event log ----------------------------------------------------------------------------------------


async def test_an_unknown_priority_is_refused_in_its_slot(ns: str) -> None:
    """An item with a priority that has no lane fails alone; the rest of the batch is appended."""
    log = await RabbitEventLog.connect(URL, Settings(namespace=ns))
    try:
        bad = make_event("e1", priority="urgent")  # type: ignore[arg-type]
        result = await log.append(appends(bad, make_event("e2")))
        assert isinstance(result[0], InvalidInputError)
        assert result[1] == Appended("e2")
        assert ids(await drain(log)) == ["e2"]
    finally:
        await log.close()


async def test_a_delivery_not_acked_within_ack_wait_is_handed_out_again(ns: str) -> None:
    """A worker that gave up on a batch without acking gets it again once ``ack_wait`` has passed."""
    clock = FakeClock()
    log = await RabbitEventLog.connect(URL, Settings(namespace=ns, ack_wait=30.0), clock=clock)
    try:
        await log.append(appends(*(make_event(f"e{i}") for i in range(3))))
        first = await log.read(2, 1.0)
        assert ids(first) == ["e0", "e1"]
        clock.advance(29.0)
        assert ids(await log.read(10, 1.0)) == ["e2"]  # e0, e1 are still leased
        clock.advance(1.0)
        again = await log.read(10, 1.0)
        assert ids(again) == ["e0", "e1"]  # back, ahead of anything newer
        await log.ack(first)  # a late ack of the expired deliveries is skipped, not an error
        await log.ack(again)
        assert await log.lag() == 1  # e2: handed out, never acked
    finally:
        await log.close()


async def test_acking_twice_is_harmless(ns: str) -> None:
    """A delivery acked twice (a worker bug) breaks nothing: later deliveries still come and are acked."""
    log = await RabbitEventLog.connect(URL, Settings(namespace=ns))
    try:
        await log.append(appends(make_event("e1"), make_event("e2")))
        [first] = await log.read(1, 1.0)
        await log.ack([first])
        await log.ack([first])
        [second] = await log.read(1, 1.0)
        await log.ack([second])
        assert ids([second]) == ["e2"]
        assert await log.lag() == 0
    finally:
        await log.close()


async def test_a_delivery_of_another_log_is_refused(ns: str) -> None:
    """Acking something that did not come from this log is a programming error, said clearly."""
    log = await RabbitEventLog.connect(URL, Settings(namespace=ns))
    try:
        with pytest.raises(InvalidInputError):
            await log.ack([Delivery(make_event("e1"), token=7)])
    finally:
        await log.close()


async def test_worker_processes_share_the_events_and_take_over_a_dead_ones(ns: str) -> None:
    """Two workers: the partition of a key is read by one at a time; when it dies without acking, the other
    takes the partition and gets the events again first, in order, then the newer ones."""
    settings = Settings(namespace=ns, log_lease=1.0)
    one = await RabbitEventLog.connect(URL, settings)
    two = await RabbitEventLog.connect(URL, settings)
    try:
        await one.append(appends(*(make_event(f"e{i}") for i in range(6))))
        assert ids(await one.read(3, 1.0)) == ["e0", "e1", "e2"]
        assert await two.read(10, 0.2) == []  # the partition is held by ``one``
        await one.close()  # dies holding e0..e2: the broker puts them back at the head of the queue
        got: list[Delivery] = []
        for _ in range(10):  # bounded: ``two`` takes the partition at its next round
            got += await two.read(10, 1.0)
            if len(got) >= 6:
                break
        assert ids(got) == [f"e{i}" for i in range(6)]
    finally:
        await one.close()
        await two.close()


@pytest.mark.serial  # a bound on the wall clock
async def test_an_unreachable_broker_is_unavailable_promptly() -> None:
    """Opening a log or a bus against a port where no broker listens fails fast with UnavailableError."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, never listening: connections are refused
        url = f"amqp://guest:guest@127.0.0.1:{port}/"
        started = time.monotonic()
        with pytest.raises(UnavailableError):
            await RabbitEventLog.connect(url, Settings(namespace="tnowhere"))
        with pytest.raises(UnavailableError):
            await RabbitBus.connect(url, Settings(namespace="tnowhere"))
        assert time.monotonic() - started < 2 * OP_TIMEOUT


# --- the live bus -----------------------------------------------------------------------------------------


async def test_a_worker_bus_reaches_a_gateway_bus(ns: str) -> None:
    """A message published by one process reaches the handler subscribed in another process."""
    settings = Settings(namespace=ns)
    worker, gateway = await RabbitBus.connect(URL, settings), await RabbitBus.connect(URL, settings)
    try:
        got = Received()
        await gateway.subscribe("app1", "alice", got)
        await worker.publish([live(1), live(2)])
        assert await got.wait_for(2)
        assert got.seqs == [1, 2]
    finally:
        await worker.close()
        await gateway.close()


@pytest.mark.parametrize(
    ("user", "other"),
    [("a.b", "a"), ("*", "#"), ("x" * 300, "x" * 299), ("", " ")],
    ids=["dots", "wildcards", "too-long", "empty"],
)
async def test_ids_never_leak_into_each_others_routing_keys(ns: str, user: str, other: str) -> None:
    """Ids with dots, wildcards, empty or too long for a routing key reach their own user only."""
    bus = await RabbitBus.connect(URL, Settings(namespace=ns))
    try:
        mine, theirs = Received(), Received()
        await bus.subscribe("app1", user, mine)
        await bus.subscribe("app1", other, theirs)
        await bus.publish([live(1, user=user), live(2, user=other)])
        assert await mine.wait_for(1)
        assert await theirs.wait_for(2)
        await asyncio.sleep(0.05)  # give a misrouted message the time to show up
        assert (mine.seqs, theirs.seqs) == ([1], [2])
        assert len(routing_key("app1", user).encode()) <= 255
    finally:
        await bus.close()


async def routed(ns: str, app: str, user: str) -> bool:
    """Whether the broker has a queue bound for (app, user): an unroutable mandatory message comes back."""
    connection = await aio_pika.connect(URL, timeout=2)
    try:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        exchange = await channel.get_exchange(live_exchange(ns), ensure=False)
        try:
            await exchange.publish(aio_pika.Message(b"probe"), routing_key(app, user), mandatory=True)
        except aio_pika.exceptions.PublishError:
            return False
        return True
    finally:
        await connection.close()


async def test_a_user_left_by_every_connection_is_unbound(ns: str) -> None:
    """Once a user's last connection here closes, their messages no longer come to this process at all."""
    bus = await RabbitBus.connect(URL, Settings(namespace=ns))
    try:
        hub = Hub(bus)  # the bus's one subscriber, holding one subscription for all of a user's connections
        phone = await hub.attach("app1", "alice", Received())
        laptop = await hub.attach("app1", "alice", Received())
        await phone()
        assert await routed(ns, "app1", "alice")  # the laptop is still there
        await laptop()
        assert not await routed(ns, "app1", "alice")
        again = Received()
        await bus.subscribe("app1", "alice", again)  # bound anew
        await bus.publish([live(1)])
        assert await again.wait_for(1)
    finally:
        await bus.close()


# --- losing the connection (shared broker: only our own connections) --------------------------------------


async def rabbitmqctl(*args: str) -> str:
    """Runs ``rabbitmqctl`` against the shared broker's node (read-only, or on our own connections)."""
    assert RABBITMQCTL is not None
    process = await asyncio.create_subprocess_exec(
        RABBITMQCTL, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    async with asyncio.timeout(60):
        out, _ = await process.communicate()
    assert process.returncode == 0, out.decode(errors="replace")
    return out.decode(errors="replace")


async def close_connections_named(prefix: str) -> int:
    """Closes, from the broker's side, the connections whose name starts with ``prefix`` (ours only)."""
    listing = await rabbitmqctl("list_connections", "pid", "client_properties", "-q", "--no-table-headers")
    pids = [line.split("\t", 1)[0] for line in listing.splitlines() if f'"connection_name","{prefix}' in line]
    for pid in pids:
        await rabbitmqctl("close_connection", pid, "tidings test: reconnect")
    return len(pids)


async def eventually(attempt: Callable[[], Awaitable[bool]], seconds: float = 20.0) -> None:
    """Retries ``attempt`` (each failure being UnavailableError or False) until it succeeds, bounded."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(UnavailableError):
            if await attempt():
                return
        await asyncio.sleep(0.1)
    raise AssertionError("the client did not recover in time")


@pytest.mark.skipif(RABBITMQCTL is None, reason="rabbitmqctl is not installed")
async def test_a_connection_closed_by_the_broker_is_restored(ns: str) -> None:
    """After the broker drops our connections, the same log and bus objects work again by themselves:
    unacked events come back, acked ones do not, and live messages reach the existing subscription."""
    settings = Settings(namespace=ns)
    log, bus = await RabbitEventLog.connect(URL, settings), await RabbitBus.connect(URL, settings)
    try:
        got = Received()
        await bus.subscribe("app1", "alice", got)
        await log.append(appends(*(make_event(f"e{i}") for i in range(3))))
        await log.ack(await log.read(1, 1.0))
        assert ids(await log.read(1, 1.0)) == ["e1"]  # held, never acked
        assert await close_connections_named(f"{ns}.") == 2
        await eventually(reads(log, ["e1", "e2"]))
        await eventually(lambda: publish_and_see(bus, got, seq=7))
    finally:
        await log.close()
        await bus.close()


def reads(log: RabbitEventLog, expected: list[str]) -> Callable[[], Awaitable[bool]]:
    """An attempt for ``eventually``: true once the log has handed out exactly ``expected``, in order."""
    seen: list[str] = []

    async def attempt() -> bool:
        seen.extend(ids(await drain(log)))
        return seen == expected

    return attempt


async def publish_and_see(bus: RabbitBus, got: Received, seq: int) -> bool:
    await bus.publish([live(seq)])
    return await got.wait_for(seq, timeout=0.3)


# --- a broker restart (our own node) ------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RabbitNode:
    """A RabbitMQ node of our own: unique name, free ports, data and logs in a temporary directory.

    The Debian ``rabbitmq-server`` script runs the node as the ``rabbitmq`` user, so the directory is made
    writable for it. ``crash`` acts on this node only (the pid it wrote into our directory).
    """

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="tidings-rabbitmq-"))
        self.root.chmod(0o777)
        self.name = f"tidings-test-{secrets.token_hex(4)}@localhost"
        self.port, self.dist_port = free_port(), free_port()
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/"
        self._process: asyncio.subprocess.Process | None = None
        # The system's rabbitmq.conf names port 5672: this node gets a config of its own.
        (self.root / "rabbitmq.conf").write_text(
            f"listeners.tcp.local = 127.0.0.1:{self.port}\nlog.file.level = warning\n"
        )
        (self.root / "rabbitmq-env.conf").write_text("")
        (self.root / "enabled_plugins").write_text("[].\n")

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.root / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.root / "log"),
            "RABBITMQ_PID_FILE": str(self.root / "node.pid"),
            "RABBITMQ_CONFIG_FILE": str(self.root / "rabbitmq.conf"),
            "RABBITMQ_CONF_ENV_FILE": str(self.root / "rabbitmq-env.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.root / "enabled_plugins"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "ERL_FLAGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }

    async def start(self, seconds: float = 60.0) -> float:
        """Starts the node and waits until it accepts AMQP connections; returns how long that took."""
        assert RABBITMQ_SERVER is not None
        started = time.monotonic()
        self._process = await asyncio.create_subprocess_exec(
            RABBITMQ_SERVER,
            env=self.env(),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,
        )
        while time.monotonic() - started < seconds:
            if self._process.returncode is not None:
                raise AssertionError(f"rabbitmq-server exited with {self._process.returncode}")
            with contextlib.suppress(Exception):
                connection = await aio_pika.connect(self.url, timeout=1)
                await connection.close()
                return time.monotonic() - started
            await asyncio.sleep(0.2)
        raise AssertionError(f"our RabbitMQ node did not start within {seconds} s")

    async def crash(self) -> None:
        """SIGKILL to our node's Erlang VM (by the pid it wrote into our directory); returns once it is gone."""
        if self._process is None or self._process.returncode is not None:
            return
        with contextlib.suppress(FileNotFoundError, ProcessLookupError, ValueError):
            os.kill(int((self.root / "node.pid").read_text().strip()), signal.SIGKILL)
        async with asyncio.timeout(30):
            await self._process.wait()
        for _ in range(200):  # the VM may outlive the script that started it by a moment
            if not self._vm_alive():
                return
            await asyncio.sleep(0.05)
        raise AssertionError("our RabbitMQ node did not stop within 10 s")

    def _vm_alive(self) -> bool:
        try:
            os.kill(int((self.root / "node.pid").read_text().strip()), 0)
        except (FileNotFoundError, ProcessLookupError, ValueError):
            return False
        return True

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
async def own_node() -> AsyncIterator[RabbitNode]:
    if RABBITMQ_SERVER is None:
        pytest.skip("rabbitmq-server is not installed")
    if os.geteuid() != 0:
        pytest.skip("the Debian rabbitmq-server script runs a node only for root or the rabbitmq user")
    node = RabbitNode()
    try:
        await node.start()
        yield node
    finally:
        await node.crash()  # its data goes with it: no need for a clean shutdown
        node.remove()


async def assert_prompt(call: Callable[[], Awaitable[object]]) -> None:
    started = time.monotonic()
    with pytest.raises(UnavailableError):
        await call()
    assert time.monotonic() - started < 1.0


async def until_unreachable(call: Callable[[], Awaitable[object]]) -> None:
    """Waits (bounded) until the client has noticed that the broker went away."""
    for _ in range(100):
        try:
            await call()
        except UnavailableError:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the client never noticed that the broker was gone")


@pytest.mark.serial  # a node killed; calls fail within 1 s
async def test_the_same_objects_work_again_after_a_broker_crash(own_node: RabbitNode) -> None:
    """While the broker is down every call says Unavailable at once; once it is back, the same log and bus
    work again without being reopened, and no appended or acked event is lost or undone, even though the
    broker was killed (SIGKILL) rather than stopped."""
    settings = Settings(namespace="trestart")
    log = await RabbitEventLog.connect(own_node.url, settings)
    bus = await RabbitBus.connect(own_node.url, settings)
    try:
        got = Received()
        await bus.subscribe("app1", "alice", got)
        await log.append(appends(*(make_event(f"e{i}") for i in range(4))))
        done = await log.read(1, 1.0)
        await log.ack(done)
        # A get is a Raft command that returns once committed, after the ack's settle sent before it on the
        # same channel: once e1 is here, the ack of e0 is on the broker's disk.
        held = await log.read(1, 1.0)  # e1: in hand when the broker goes
        await own_node.crash()
        await until_unreachable(log.lag)
        await until_unreachable(lambda: bus.publish([live(1)]))

        await assert_prompt(lambda: log.append(appends(make_event("e9"))))
        await assert_prompt(lambda: log.read(10, 5.0))
        await assert_prompt(lambda: log.ack(held))
        await assert_prompt(lambda: log.lag())
        await assert_prompt(lambda: bus.publish([live(1)]))
        await assert_prompt(lambda: bus.subscribe("app1", "bob", Received()))

        await own_node.start()
        await eventually(reads(log, ["e1", "e2", "e3"]))
        await eventually(lambda: publish_and_see(bus, got, seq=2))
        assert await log.append(appends(make_event("e4"))) == [Appended("e4")]
    finally:
        await log.close()
        await bus.close()
