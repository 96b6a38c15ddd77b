"""The local endpoints of the ``senders`` scenario, in a process of their own (their CPU is not the sender's).

One HTTP listener on 127.0.0.1 stands in for webhook receivers (``POST /hook/...`` answers 200) and for a Web
Push service (``POST /push/<id>`` answers 201 when the request carries what RFC 8030/8291/8292 demand: a
``vapid`` Authorization, ``Content-Encoding: aes128gcm`` and a ``TTL``; 400 otherwise, so a broken sender
shows as failed sends, not as a fast one). One aiosmtpd server on 127.0.0.1 accepts every mail. The stand-ins
do not verify signatures nor decrypt (tests/channels does that): they only answer like the real endpoints, as
cheaply as they can. The child prints ``ready`` with both ports and serves until it is stopped.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from tidings.bench.procs import emit


class MailSink:
    """aiosmtpd handler: accepts every recipient and every mail, and counts them."""

    def __init__(self) -> None:
        self.mails = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.mails += 1
        return "250 OK queued"


async def _hook(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(status=200)


async def _push(request: web.Request) -> web.Response:
    body = await request.read()
    headers = request.headers
    if (
        not headers.get("Authorization", "").startswith("vapid t=")
        or headers.get("Content-Encoding") != "aes128gcm"
        or "TTL" not in headers
        or not body
    ):
        return web.Response(status=400, text="not a Web Push request")
    return web.Response(status=201)


async def start_http(host: str = "127.0.0.1") -> tuple[web.AppRunner, int]:
    app = web.Application()
    app.router.add_post("/hook/{tail:.*}", _hook)
    app.router.add_post("/push/{sub}", _push)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, 0)
    await site.start()
    port = int(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
    return runner, port


async def start_smtp(host: str = "127.0.0.1") -> tuple[asyncio.Server, int]:
    from aiosmtpd.smtp import SMTP

    sink = MailSink()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(sink, hostname="sink.bench"), host, 0)
    return server, int(server.sockets[0].getsockname()[1])


async def run(spec: dict[str, Any]) -> None:
    runner, http_port = await start_http()
    smtp, smtp_port = await start_smtp()
    emit("ready", http=http_port, smtp=smtp_port)
    try:
        await asyncio.Event().wait()  # until the parent stops this process
    finally:
        smtp.close()
        await runner.cleanup()
