"""The admin page's data endpoints: this process's metrics, and one event's journey."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tidings.admin.journey import id_time
from tidings.core.delivery import WebhookEndpoint
from tidings.core.ids import new_id
from tidings.observability.journal import JOURNAL, Journal
from tidings.runtime import LAG_INTERVAL

from .support import Stack, open_stack


async def test_admin_data_needs_the_admin_token_but_the_page_does_not(stack: Stack) -> None:
    """/admin loads for anyone (it holds no data); /admin/api/* answer 401 without the right bearer token."""
    page = await stack.http.get("/admin")
    assert page.status_code == 200
    assert "script-src" not in page.headers["content-security-policy"]  # default-src 'self' covers it
    assert "'self'" in page.headers["content-security-policy"]
    assert (await stack.http.get("/admin/static/charts.js")).status_code == 200
    for path in ("/admin/api/stats", f"/admin/api/events/{new_id(1.0)}"):
        assert (await stack.http.get(path)).status_code == 401
        wrong = await stack.http.get(path, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
    assert (await stack.http.get("/admin/api/stats", headers=stack.admin)).status_code == 200


async def test_without_an_admin_token_configured_the_data_routes_do_not_exist(tmp_path: Path) -> None:
    """TIDINGS_ADMIN_TOKEN unset: /admin/api/* answer 404, whatever token is sent."""
    async with open_stack(tmp_path, admin_token="") as stack:
        answer = await stack.http.get("/admin/api/stats", headers={"Authorization": "Bearer x"})
        assert answer.status_code == 404


async def test_stats_show_throughput_connections_lag_and_latency(stack: Stack) -> None:
    """After traffic, the stats count it: accepted events, funnel stages, connections, lag, histograms."""
    acme = await stack.tenant("acme")
    alice = await stack.connect("acme", "alice", transport="sse")
    first = (await stack.http.get("/admin/api/stats", headers=stack.admin)).json()
    for _ in range(3):
        await stack.http.post(
            "/v1/events", json={"type": "t", "recipients": ["alice"]}, headers=acme.producer
        )
    await asyncio.sleep(LAG_INTERVAL)  # the lag is read from the log at most once per LAG_INTERVAL
    lagging = (await stack.http.get("/admin/api/stats", headers=stack.admin)).json()
    await stack.fan_out()
    await alice.notifications(3)
    await asyncio.sleep(LAG_INTERVAL)
    now = (await stack.http.get("/admin/api/stats", headers=stack.admin)).json()

    assert lagging["lag"] == 3
    assert now["lag"] == 0
    assert now["counters"]["accepted"] - first["counters"]["accepted"] == 3
    assert now["funnel"]["delivered_live"] - first["funnel"]["delivered_live"] == 3
    delivered = now["histograms"]["accepted_to_delivered"]
    assert delivered["count"] - first["histograms"]["accepted_to_delivered"]["count"] == 3
    assert delivered["le"][-1] is None  # +Inf, as JSON can say it
    assert len(delivered["le"]) == len(delivered["counts"])
    assert now["process"]["open_fds"] > 0
    assert now["version"]
    assert now["at"] > first["at"]


async def test_stats_list_disabled_webhook_endpoints_by_app_and_host_only(stack: Stack) -> None:
    """The ledger is sampled by the stats call itself; a disabled endpoint shows its app and URL host, never
    its path (which may carry a token) nor its secret."""
    out = stack.runtime.store.outbound
    for hook_id, disabled, failing_since in (("h1", True, 5.0), ("h2", False, None)):
        url = f"https://{hook_id}.example:8443/in?token=s3cret"
        await out.add_webhook(
            WebhookEndpoint(hook_id, "acme", url, (), ("whsec_x",), 1.0, None, disabled, failing_since)
        )
    offline = (await stack.http.get("/admin/api/stats", headers=stack.admin)).json()["offline"]
    assert offline["webhooks_disabled"] == 1
    assert offline["disabled"] == [{"id": "h1", "app": "acme", "host": "h1.example", "failing_since": 5.0}]
    assert {"dead_letters", "queue_depth", "oldest_due_seconds", "sends", "sends_by_channel"} <= set(offline)


async def test_the_journey_of_an_event_shows_each_inbox_row_delivery_and_mark(stack: Stack) -> None:
    """Accepted, fanned out to two users, stored, delivered live to one (over SSE), seen and read by her."""
    acme = await stack.tenant("acme")
    alice = await stack.connect("acme", "alice", transport="sse")
    body = {"type": "post.liked", "recipients": ["alice", "<b>bob</b>"], "priority": "high"}
    event_id = (await stack.http.post("/v1/events", json=body, headers=acme.producer)).json()["id"]
    await stack.fan_out()
    (notification,) = await alice.notifications(1)
    token = {"Authorization": f"Bearer {await stack.user_token(acme, 'alice')}"}
    await stack.http.post("/v1/me/notifications/seen", json={"up_to": notification["seq"]}, headers=token)
    await stack.http.post("/v1/me/notifications/read", json={"seqs": [notification["seq"]]}, headers=token)

    journey = (await stack.http.get(f"/admin/api/events/{event_id}", headers=stack.admin)).json()
    assert journey["accepted"]["app"] == "acme"
    assert journey["accepted"]["priority"] == "high"
    assert journey["accepted"]["recipients"] == 2
    assert journey["fanout"]["inbox_writes"] == 2
    assert journey["id_time"][:16] == journey["accepted"]["at"][:16]
    rows = {row["user"]: row for row in journey["inbox"]}
    assert set(rows) == {"alice", "<b>bob</b>"}
    assert rows["alice"]["seq"] == notification["seq"]
    assert [(d["transport"], d["live"]) for d in rows["alice"]["deliveries"]] == [("sse", True)]
    assert rows["alice"]["seen_at"] is not None
    assert rows["alice"]["read_at"] is not None
    assert rows["<b>bob</b>"]["deliveries"] == []
    assert journey["summary"] == {"stored": 2, "delivered_live": 1, "seen": 1, "read": 1}

    one = await stack.http.get(f"/admin/api/events/{event_id}?app=acme&user=alice", headers=stack.admin)
    assert [row["user"] for row in one.json()["inbox"]] == ["alice"]


async def test_an_event_nobody_knows_is_a_404_and_a_bad_id_a_422(stack: Stack) -> None:
    """An unknown id: 404 in the common error shape; an id with control characters: 422."""
    unknown = await stack.http.get(f"/admin/api/events/{new_id(1.0)}", headers=stack.admin)
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "not_found"
    assert (await stack.http.get("/admin/api/events/a%00b", headers=stack.admin)).status_code == 422


async def test_events_that_reached_the_store_are_found_by_a_process_that_never_saw_them(stack: Stack) -> None:
    """The journal is per process; a process that never saw the event still shows its inbox rows."""
    acme = await stack.tenant("acme")
    event_id = (
        await stack.http.post("/v1/events", json={"type": "t", "recipients": ["dan"]}, headers=acme.producer)
    ).json()["id"]
    await stack.fan_out()
    JOURNAL.clear()  # as if another process served the API and the worker
    journey = (await stack.http.get(f"/admin/api/events/{event_id}", headers=stack.admin)).json()
    assert journey["accepted"] is None
    assert journey["fanout"] is None
    assert [row["user"] for row in journey["inbox"]] == ["dan"]
    assert journey["id_time"] is not None


def test_the_journal_forgets_the_oldest_past_its_bounds() -> None:
    """Bounded memory: past the limits the oldest deliveries go first, whole writes at a time; every copy
    (another device, a resume) counts against the bound, so a reconnect loop cannot grow it either."""
    journal = Journal(max_events=3, max_deliveries=2)
    for seq in range(1, 5):
        journal.delivered("a", "u", "ws", float(seq), [seq], [seq])
    assert journal.sizes()[1] == 2
    assert journal.deliveries("a", "u", 1) == []
    assert journal.deliveries("a", "u", 4) == [("ws", 4.0, True)]
    for _ in range(40):
        journal.delivered("a", "u", "sse", 9.0, [4])
    assert journal.deliveries("a", "u", 4) == [("sse", 9.0, False)] * 2
    assert journal.sizes()[1] == 2


def test_one_journal_record_per_write_answers_for_each_of_its_seqs() -> None:
    """A write of seqs 3..7 without 5 (a replaced row the backlog skipped), 6 and 7 heard live: each seq is
    found with the write's time and transport, 5 is not, and live is told per seq."""
    journal = Journal()
    journal.delivered("a", "u", "ws", 2.0, [3, 4, 6, 7], [6, 7])
    journal.delivered("a", "u", "ws", 3.0, [8, 9], [8, 9])
    journal.delivered("a", "v", "sse", 4.0, [1, 2])
    assert journal.deliveries("a", "u", 3) == [("ws", 2.0, False)]
    assert journal.deliveries("a", "u", 5) == []
    assert journal.deliveries("a", "u", 7) == [("ws", 2.0, True)]
    assert journal.deliveries("a", "u", 9) == [("ws", 3.0, True)]
    assert journal.deliveries("a", "v", 2) == [("sse", 4.0, False)]
    assert journal.deliveries("a", "w", 1) == []
    journal.delivered("a", "u", "ws", 5.0, [])  # nothing written: nothing recorded
    assert journal.sizes() == (0, 8)
    journal.clear()
    assert journal.sizes() == (0, 0)
    assert journal.deliveries("a", "u", 3) == []


def test_the_acceptance_time_is_read_back_from_the_event_id() -> None:
    """Event ids are ULIDs: their first ten characters are the acceptance time in milliseconds."""
    assert id_time(new_id(1_790_000_000.123)) == 1_790_000_000.123
    assert id_time("not-an-id") is None


async def test_a_topic_fanned_out_in_chunk_jobs_shows_every_recipient(tmp_path: Path) -> None:
    """A topic of 5 run as chunk jobs of 2: the journey counts all 5 inbox writes and lists all 5 rows."""
    async with open_stack(tmp_path, fanout_chunk=2) as stack:
        acme = await stack.tenant("acme")
        for user in ("u1", "u2", "u3", "u4", "u5"):
            await stack.http.put(f"/v1/topics/fans/subscribers/{user}", headers=acme.producer)
        answer = await stack.http.post(
            "/v1/events", json={"type": "t", "topic": "fans"}, headers=acme.producer
        )
        await stack.fan_out()
        journey = (
            await stack.http.get(f"/admin/api/events/{answer.json()['id']}", headers=stack.admin)
        ).json()
    assert journey["accepted"]["topic"] == "fans"
    assert journey["fanout"]["inbox_writes"] == 5
    assert [row["user"] for row in journey["inbox"]] == ["u1", "u2", "u3", "u4", "u5"]
