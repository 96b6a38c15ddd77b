"""Dead letters end to end: a refused webhook goes dead without its secret in ``last_error``, the CLI lists it
and sends it again."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from aiohttp import web

from channels.servers import serve
from tidings.channels.webhook import new_secret
from tidings.cli import main
from tidings.core.delivery import WebhookEndpoint
from tidings.core.rules import AppRules
from tidings.testing import FakeClock

from .support import APP, notify, opened, sender, settings_for, statuses


async def cli(*argv: str) -> int:
    """``tidings ...`` as the command line runs it (its own event loop, so in a thread here)."""
    return await asyncio.to_thread(main, list(argv))


async def test_a_refused_webhook_goes_dead_and_the_cli_retries_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clock = FakeClock()
    settings = settings_for(tmp_path)
    secret = new_secret()
    answers = [400, 204]

    async def echo(request: web.Request) -> web.Response:
        # A careless receiver that echoes what it got, the signature and the secret included.
        text = json.dumps(dict(request.headers)) + secret
        return web.Response(status=answers.pop(0), text=text)

    async with serve(echo) as (base, _):
        async with opened(settings, clock) as store:
            await store.preferences.set_rules(APP, AppRules(channels={"webhook": True, "web_push": False}))
            await store.outbound.add_webhook(WebhookEndpoint("h1", APP, base + "/hook", (), (secret,), 1.0))
            event_id = await notify(store, clock)
            s = sender(store, settings, clock)
            await s.tick()
            await s.close()
            [record] = await store.outbound.for_event(APP, event_id, 10)
            assert record.status == "dead"
            assert record.last_error is not None
            assert "400" in record.last_error
            assert secret not in record.last_error
            assert secret.removeprefix("whsec_") not in record.last_error
        assert await cli("deliveries", "dead", "--app", APP, "--store", settings.store_url) == 0
        [line] = capsys.readouterr().out.splitlines()
        listed = json.loads(line)
        assert (listed["kind"], listed["id"], listed["channel"]) == ("delivery", record.id, "webhook")
        assert secret not in line
        assert await cli("deliveries", "retry", "--all", "--store", settings.store_url) == 0
        assert json.loads(capsys.readouterr().out) == {"retried": 1}
        assert await cli("deliveries", "retry", "--store", settings.store_url) == 1  # ids or --all
        clock.advance(max(0.0, time.time() - clock.time()) + 1)  # the CLI stamps the wall clock
        async with opened(settings, clock) as store:
            s = sender(store, settings, clock)
            await s.tick()
            await s.close()
            assert await statuses(store, event_id) == [("webhook:h1", "sent")]
