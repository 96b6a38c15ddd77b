"""The deliveries ledger under faults: two ``tidings sender`` processes, a webhook receiver that fails 30% of
requests with 500, and one replica killed with SIGKILL mid-run (then restarted). Every notification is
received exactly once per (channel, target), counting distinct webhook-ids (a resend after a crash carries
the same id), or is in the dead-letter list; none is lost. On a SQLite file and on PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import httpx
import pytest
from aiohttp import web
from standardwebhooks.webhooks import Webhook

from channels.servers import serve
from tidings.backends import open_store
from tidings.backends.sql.postgres import quoted
from tidings.channels.webhook import new_secret
from tidings.core.delivery import DeliveryRecord, WebhookEndpoint
from tidings.core.models import ChannelPlan, Event, InboxWrite
from tidings.ports import Store
from tidings.settings import Settings

pytestmark = pytest.mark.serial  # sender processes killed -9 mid-run: make test runs it alone

TIDINGS = Path(sys.executable).parent / "tidings"
PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
APP = "app1"


@dataclass
class Receiver:
    """Verifies each request with ``standardwebhooks``; answers 500 to ~30% of them (seeded)."""

    secret: str
    rand: random.Random = field(default_factory=lambda: random.Random(11))
    accepted: dict[str, tuple[str, int]] = field(default_factory=dict)  # webhook-id -> (user, seq)
    accepted_twice: list[str] = field(default_factory=list)
    requests: int = 0

    async def __call__(self, request: web.Request) -> web.Response:
        body = await request.read()
        payload = Webhook(self.secret).verify(body, dict(request.headers))
        self.requests += 1
        if self.rand.random() < 0.3:
            return web.Response(status=500, text="flaky")
        msg_id = request.headers["webhook-id"]
        note = (payload["data"]["user"], payload["data"]["notification"]["seq"])
        if msg_id in self.accepted:
            self.accepted_twice.append(msg_id)
            assert self.accepted[msg_id] == note  # the same id always carries the same notification
        self.accepted[msg_id] = note
        return web.Response(status=204)


class SenderProcess:
    def __init__(self, store_url: str, namespace: str, log: Path) -> None:
        self.port = _free_port()
        self.log = log
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
        self.env.update(
            {
                "TIDINGS_STORE": store_url,
                "TIDINGS_NAMESPACE": namespace,
                "TIDINGS_EGRESS_ALLOW": "127.0.0.1/32",
                "TIDINGS_SENDER_LEASE": "3",
                "TIDINGS_SENDER_POLL": "0.1",
                "TIDINGS_SENDER_BATCH": "20",
                "TIDINGS_SENDER_RETRY_BASE": "0.05",
                "TIDINGS_SENDER_RETRY_CAP": "0.5",
                "TIDINGS_SENDER_MAX_ATTEMPTS": "6",
                "TIDINGS_WEBHOOK_RETRY_SCHEDULE": "",
                "TIDINGS_SQLITE_SYNCHRONOUS": "NORMAL",
                # /metrics on the main port: no second listener whose +1000 port could meet the other sender's
                "TIDINGS_METRICS_PORT": "-1",
            }
        )
        self.proc: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        argv = [
            str(TIDINGS),
            "sender",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--log-format",
            "console",
        ]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(  # noqa: ASYNC220
                argv, stdout=out, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
            )
        deadline = time.monotonic() + 30
        async with httpx.AsyncClient(trust_env=False, timeout=1.0) as http:
            while time.monotonic() < deadline:
                assert self.proc.poll() is None, self.log.read_text()[-3000:]
                try:
                    if (await http.get(f"http://127.0.0.1:{self.port}/readyz")).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.1)
        raise AssertionError("the sender did not get ready:\n" + self.log.read_text()[-3000:])

    def kill(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    async def stop(self) -> None:
        """SIGTERM, then wait without blocking the loop (the receiver in this process must keep answering
        the sends in flight, which a graceful stop lets finish)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                await asyncio.to_thread(self.proc.wait, 20)
            except subprocess.TimeoutExpired:
                self.kill()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def store_at(engine: str, tmp: Path) -> AsyncIterator[tuple[Store, str, str]]:
    if engine == "sqlite":
        url, ns = f"sqlite:///{tmp / 'ledger.db'}", "tidings"
    else:
        try:
            conn = await asyncpg.connect(PG_URL, timeout=2)
            await conn.close()
        except (OSError, TimeoutError, asyncpg.PostgresError):
            if os.environ.get("TIDINGS_TEST_REQUIRE"):
                raise
            pytest.skip("PostgreSQL is not running on 127.0.0.1:5432")
        url, ns = PG_URL, "ledger_" + uuid.uuid4().hex[:12]
    settings = Settings(store=url, namespace=ns, sqlite_synchronous="NORMAL")
    store = await open_store(url, settings)
    try:
        yield store, url, ns
    finally:
        await store.close()
        if engine == "postgres":
            conn = await asyncpg.connect(PG_URL, timeout=5)
            await conn.execute(f"DROP SCHEMA IF EXISTS {quoted(ns)} CASCADE")
            await conn.close()


async def ledger_of(store: Store, notifications: int) -> list[DeliveryRecord]:
    return [r for n in range(notifications) for r in await store.outbound.for_event(APP, f"E{n:05d}", 10)]


async def run_ledger(engine: str, tmp: Path, notifications: int, kill_after: int) -> None:
    secret = new_secret()
    receiver = Receiver(secret)
    async with store_at(engine, tmp) as (store, url, ns), serve(receiver) as (base, _):
        await store.outbound.add_webhook(
            WebhookEndpoint("h1", APP, base + "/hook", (), (secret,), time.time())
        )
        writes = []
        for n in range(notifications):
            user = f"u{n % 7}"
            event = Event(
                id=f"E{n:05d}", app=APP, type="post.liked", accepted_at=time.time(), recipients=(user,)
            )
            writes.append(InboxWrite(APP, user, event, channels=(ChannelPlan("webhook", "test"),)))
        for i in range(0, len(writes), 100):
            await store.inbox.write(writes[i : i + 100])
        senders = [SenderProcess(url, ns, tmp / f"sender-{i}.log") for i in range(2)]
        try:
            await asyncio.gather(*[s.start() for s in senders])
            deadline = time.monotonic() + 60
            while len(receiver.accepted) < kill_after and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
            senders[0].kill()  # mid-run: its leased deliveries are taken again after the lease
            at_kill = len(receiver.accepted)
            await senders[0].start()
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:  # until the ledger says every delivery ended
                records = await ledger_of(store, notifications)
                if len(records) == notifications and all(r.status in ("sent", "dead") for r in records):
                    break
                await asyncio.sleep(0.5)
        finally:
            await asyncio.gather(*[s.stop() for s in senders])
        records = await ledger_of(store, notifications)
    logs = "\n".join(s.log.read_text()[-2000:] for s in senders)
    assert len(records) == notifications, logs  # one delivery per notification and target: none lost
    sent = {(r.user, r.seq) for r in records if r.status == "sent"}
    dead = {(r.user, r.seq) for r in records if r.status == "dead"}
    assert len(sent) + len(dead) == notifications, ({r.status for r in records}, logs)
    received = sorted(receiver.accepted.values())
    assert len(received) == len(set(received)), "a notification was accepted under two webhook-ids"
    assert set(received) >= sent  # every sent one was received (once per distinct webhook-id)
    assert set(received) <= sent | dead  # a dead one may have been received by an attempt that then timed out
    assert receiver.requests > notifications  # the 30% failures were retried
    assert kill_after <= at_kill < notifications  # the kill came mid-run


async def test_two_senders_one_killed_sqlite(tmp_path: Path) -> None:
    await run_ledger("sqlite", tmp_path, notifications=80, kill_after=20)


async def test_two_senders_one_killed_postgres(tmp_path: Path) -> None:
    await run_ledger("postgres", tmp_path, notifications=80, kill_after=20)


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["sqlite", "postgres"])
async def test_two_senders_one_killed_larger(engine: str, tmp_path: Path) -> None:
    await run_ledger(engine, tmp_path, notifications=1000, kill_after=300)
