"""Scenario ``senders``: sends per second of one sender process, per channel, and the CPU each send costs,
beside the bare library call doing the same send in the same run.

The endpoints are local and in another process (:mod:`tidings.bench.sinks`): a webhook receiver, a Web Push
service stand-in, an SMTP server. The measuring process (role ``sender``, under uvloop) runs *paths* over
the same number of sends, alternately, with the same concurrency, and reads its own CPU time around each:

- ``library``: the bare library call -- webhook: an ``httpx`` POST of a prepared body on a pooled client; Web
  Push: ``http_ece`` aes128gcm encryption with a fresh ephemeral key (as pywebpush does), a ``py_vapid``
  signature and an ``httpx`` POST; email: a multipart mail (text and HTML) built with the standard
  library's ``email`` package and sent with ``aiosmtplib.send`` (a mail cannot be sent without being built,
  and each has its own recipient and Message-ID; the message build is about half of this baseline);
- ``adapter``: the channel adapter's ``Channel.send`` for a :class:`~tidings.channels.base.Message` built
  per send (webhook signing, the egress guard's resolution and pinning, Web Push headers, the email
  templates' rendering...).

The issue's goal: the sender's own work (adapter CPU per send minus library CPU per send) at most 25% of the
library call's. The sender role's full loop (claiming due rows, leases, outcomes written back) is being built
beside this scenario: it becomes a third path, ``sender``, in :data:`PATHS` (a factory like the two below,
fed by a store seeded with due rows), and the report's ratio then compares it too.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

import orjson

from tidings.bench.harness import load_average
from tidings.bench.procs import Child, emit, python_child
from tidings.channels.base import ChannelName, EmailTarget, Message, Target, WebhookTarget, WebPushTarget
from tidings.channels.egress import EgressPolicy, parse_allow

CHANNELS: tuple[ChannelName, ...] = ("webhook", "web_push", "email")
GOAL = 0.25  # the sender's own CPU per send, as a share of the library call's
SUBJECT = "mailto:bench@tidings.invalid"
NOTE: dict[str, Any] = {
    "seq": 17,
    "id": "0193a0c4-7f1e-7c2a-9d11-2b1c3e4f5a6b",
    "event_id": "ev_bench_1",
    "type": "comment.created",
    "actors": [{"id": "ada", "name": "Ada"}],
    "count": 1,
    "object": {"id": "post:42", "type": "post"},
    "data": {"text": "Ada commented on your post: nice work!", "url": "https://example.org/p/42"},
    "priority": "normal",
    "created_at": "2026-12-03T10:00:00.000Z",
    "read_at": None,
    "seen_at": None,
    "replaces": None,
}

Send = Callable[[int], Awaitable[bool]]
Close = Callable[[], Awaitable[None]]


@dataclass
class Pass:
    sends: int = 0
    ok: int = 0
    seconds: float = 0.0
    cpu: float = 0.0

    def add(self, other: Pass) -> None:
        self.sends += other.sends
        self.ok += other.ok
        self.seconds += other.seconds
        self.cpu += other.cpu


async def drive(send: Send, sends: int, concurrency: int) -> Pass:
    """``sends`` calls of ``send`` with ``concurrency`` in flight; wall and CPU (all threads) around them."""
    numbers = iter(range(sends))
    ok = 0

    async def worker() -> None:
        nonlocal ok
        for i in numbers:
            sent = await send(i)  # awaited first: `ok += await ...` would read ok before the await
            ok += sent

    cpu, started = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return Pass(sends, ok, time.perf_counter() - started, time.process_time() - cpu)


# --- the paths ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoints:
    http: str  # http://127.0.0.1:PORT
    smtp_port: int


def _policy() -> EgressPolicy:
    return EgressPolicy(allow=parse_allow("127.0.0.1/32"))  # the sinks are on loopback


def _target(channel: ChannelName, ends: Endpoints, keys: Browser) -> Target:
    if channel == "webhook":
        from tidings.channels.webhook import new_secret

        return WebhookTarget("wh_1", f"{ends.http}/hook/bench", (new_secret(),))
    if channel == "web_push":
        return WebPushTarget("ps_1", f"{ends.http}/push/ps_1", keys.p256dh, keys.auth)
    return EmailTarget("ada@example.org", "Ada", unsubscribe_url="https://example.org/u/tok")


@dataclass(frozen=True)
class Browser:
    """A subscription's keys, as ``pushManager.subscribe`` makes them (base64url)."""

    p256dh: str
    auth: str

    @classmethod
    def new(cls) -> Browser:
        import os

        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        from tidings.channels.webpush import b64url

        point = (
            ec.generate_private_key(ec.SECP256R1())
            .public_key()
            .public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
        )
        return cls(b64url(point), b64url(os.urandom(16)))


async def adapter_path(channel: ChannelName, ends: Endpoints) -> tuple[Send, Close]:
    """``Channel.send`` of the channel's adapter, one Message built per send."""
    from tidings.channels.email import EmailChannel
    from tidings.channels.webhook import WebhookChannel
    from tidings.channels.webpush import WebPushChannel, generate_vapid_keys

    vapid = generate_vapid_keys()
    adapter: WebhookChannel | WebPushChannel | EmailChannel
    if channel == "webhook":
        adapter = WebhookChannel(_policy())
    elif channel == "web_push":
        adapter = WebPushChannel(lambda app: (vapid.private_key, SUBJECT), _policy())
    else:
        adapter = EmailChannel(f"smtp://127.0.0.1:{ends.smtp_port}", "Tidings <bench@tidings.invalid>")
    target = _target(channel, ends, Browser.new())

    async def send(i: int) -> bool:
        message = Message(f"msg_{i}", "bench", "u1", channel, target, (NOTE,), replace_key="post:42")
        return (await adapter.send(message)).result == "sent"

    return send, adapter.close


async def library_path(channel: ChannelName, ends: Endpoints) -> tuple[Send, Close]:
    """The bare library call of the channel (see the module docstring)."""
    import httpx

    if channel == "email":
        return _smtp_library(ends)
    client = httpx.AsyncClient(trust_env=False, timeout=30.0)
    body = orjson.dumps({"type": "notification.created", "data": {"user": "u1", "notification": NOTE}})
    if channel == "webhook":
        url = f"{ends.http}/hook/bench"

        async def post(i: int) -> bool:
            headers = {"content-type": "application/json", "webhook-id": f"msg_{i}"}
            return (await client.post(url, content=body, headers=headers)).status_code < 300

        return post, client.aclose
    return _webpush_library(client, ends), client.aclose


def _webpush_library(client: Any, ends: Endpoints) -> Send:
    import http_ece
    from cryptography.hazmat.primitives.asymmetric import ec
    from py_vapid import Vapid02

    from tidings.channels.webpush import generate_vapid_keys, unb64url

    browser = Browser.new()
    dh, secret = unb64url(browser.p256dh), unb64url(browser.auth)
    signer = Vapid02.from_string(generate_vapid_keys().private_key)
    url = f"{ends.http}/push/ps_1"
    payload = orjson.dumps(NOTE)

    async def push(i: int) -> bool:
        key = ec.generate_private_key(ec.SECP256R1())
        body = http_ece.encrypt(payload, private_key=key, dh=dh, auth_secret=secret, version="aes128gcm")
        claims = {"aud": ends.http, "sub": SUBJECT, "exp": int(time.time()) + 43200}
        headers = {
            "authorization": signer.sign(claims)["Authorization"],
            "content-encoding": "aes128gcm",
            "ttl": "86400",
        }
        status: int = (await client.post(url, content=body, headers=headers)).status_code
        return status < 300

    return push


def _smtp_library(ends: Endpoints) -> tuple[Send, Close]:
    import aiosmtplib

    text = str(NOTE["data"]["text"])

    async def send(i: int) -> bool:
        mail = (
            EmailMessage()
        )  # each mail has its own recipient and Message-ID: built per send, as any sender must
        mail["From"], mail["To"], mail["Subject"] = (
            "bench@tidings.invalid",
            "ada@example.org",
            "Ada commented",
        )
        mail["Message-ID"] = f"<msg_{i}@tidings.invalid>"
        mail.set_content(text)
        mail.add_alternative(f"<p>{text}</p>", subtype="html")
        await aiosmtplib.send(mail, hostname="127.0.0.1", port=ends.smtp_port, start_tls=False)
        return True

    async def close() -> None:
        return None

    return send, close


PATHS = {"library": library_path, "adapter": adapter_path}


# --- the measuring child and the scenario -----------------------------------------------------------------------


async def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """Both paths of one channel: a warm-up each, then ``rounds`` alternations of ``sends`` each (short blocks
    alternated many times, so a change in the shared machine's load hits both paths alike)."""
    channel = spec["channel"]
    ends = Endpoints(spec["http"], spec["smtp"])
    opened = {name: await factory(channel, ends) for name, factory in PATHS.items()}
    totals = {name: Pass() for name in opened}
    try:
        for send, _ in opened.values():
            await drive(send, max(10, spec["sends"] // 2), spec["concurrency"])
        for _ in range(spec["rounds"]):
            for name, (send, _) in opened.items():
                totals[name].add(await drive(send, spec["sends"], spec["concurrency"]))
    finally:
        for _, close in opened.values():
            await close()
    return {name: vars(total) for name, total in totals.items()}


async def run(spec: dict[str, Any]) -> None:
    emit("done", **(await measure(spec)))


def summarise(channel: str, passes: dict[str, dict[str, Any]], spec: dict[str, Any]) -> dict[str, Any]:
    """One result: the adapter's rate and CPU per send, the library's, and the own-work ratio."""

    def per_send(p: dict[str, Any]) -> float:
        return 1e6 * p["cpu"] / p["sends"] if p["sends"] else 0.0

    adapter, library = passes["adapter"], passes["library"]
    own = per_send(adapter) - per_send(library)
    ratio = own / per_send(library) if per_send(library) else 0.0
    return {
        "scenario": "senders",
        "kind": channel,
        "path": "adapter",
        "sends": adapter["sends"],
        "concurrency": spec["concurrency"],
        "failed": adapter["sends"] - adapter["ok"] + library["sends"] - library["ok"],
        "ok": adapter["ok"] == adapter["sends"] and library["ok"] == library["sends"],
        "rate": round(adapter["sends"] / adapter["seconds"], 1) if adapter["seconds"] else 0.0,
        "cpu_us": round(per_send(adapter), 1),
        "library_rate": round(library["sends"] / library["seconds"], 1) if library["seconds"] else 0.0,
        "library_cpu_us": round(per_send(library), 1),
        "own_cpu_us": round(own, 1),
        "own_ratio": round(ratio, 3),
        "goal_met": ratio <= GOAL,
    }


async def run_senders(channel: str, sends: int, rounds: int = 2, concurrency: int = 8) -> dict[str, Any]:
    """One channel: start the sinks and the measuring process, return the summarised result (``sends`` per
    block, ``rounds`` blocks per path)."""
    if channel not in CHANNELS:
        raise ValueError(f"unknown channel {channel!r}")
    sinks = await Child.start("sinks", python_child("sinks", "{}"))
    sender: Child | None = None
    try:
        ports = await sinks.expect("ready", 30)
        load = load_average()
        spec = {
            "channel": channel,
            "http": f"http://127.0.0.1:{ports['http']}",
            "smtp": ports["smtp"],
            "sends": sends,
            "rounds": rounds,
            "concurrency": concurrency,
        }
        sender = await Child.start("sender", python_child("sender", orjson.dumps(spec).decode()))
        done = await sender.expect("done", 600)
        passes = {name: done[name] for name in PATHS}
        return {**summarise(channel, passes, spec), "load": round(load, 2)}
    finally:
        if sender is not None:
            await sender.stop()
        await sinks.stop()
