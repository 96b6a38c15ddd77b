"""The worker's per-row shortcuts in ``core.aggregation`` give exactly what the plain code gives (issue 12):
ids from ``id_source`` are ``ids.new_id`` of the same value, a non-aggregated row's payload, rendered once
per event and spliced, is byte for byte ``render_notification``'s, and a write without a group key planned by
``_plan_plain`` gives the plan ``_plan_any`` (the general path) gives."""

from __future__ import annotations

import dataclasses

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidings.core import aggregation
from tidings.core.ids import new_id
from tidings.core.models import ChannelPlan, Event, InboxWrite, render_notification


def test_ids_are_new_id_of_consecutive_values(monkeypatch: pytest.MonkeyPatch) -> None:
    start = (1 << 80) - 3  # wraps: the value is taken modulo 2^80, as new_id does
    monkeypatch.setattr(aggregation.secrets, "randbits", lambda bits: start)
    now = 1_700_000_000.123
    ids = aggregation.id_source(now)
    assert [ids() for _ in range(6)] == [new_id(now, start + i) for i in range(6)]


def _event(**extra: object) -> Event:
    return Event(
        id="e1",
        app="a",
        type="post.liked",
        accepted_at=1.0,
        recipients=("u1", "u2"),
        actor={"id": "x", "name": 'Quo"te\\'},
        object={"type": "post", "id": "p1"},
        data={"text": "héllo", "n": 3},
        **extra,  # type: ignore[arg-type]
    )


def test_plain_payloads_are_render_notification_byte_for_byte() -> None:
    now = 1_700_000_000.5
    writes = [InboxWrite("a", u, _event()) for u in ("u1", "u2", "u3")]
    made = iter(['n"1', "N2", "N3"])  # any id, even one JSON must escape
    plan = aggregation.plan_commit(
        writes, last={("a", "u2"): 41}, current={}, pending={}, usage={}, now=now, new_id=lambda: next(made)
    )
    for row in plan.rows:
        expected = render_notification(row.write, seq=row.seq, notification_id=row.id, created_at=now)
        assert row.payload == expected
        assert orjson.loads(row.payload)["seq"] == row.seq
    assert [row.seq for row in plan.rows] == [1, 42, 1]


def test_an_aggregate_is_still_rendered_in_full() -> None:
    now = 100.0
    event = _event(group_key="g")
    first = InboxWrite("a", "u1", event, aggregate_window=60.0)
    second = InboxWrite("a", "u1", dataclasses.replace(event, id="e2"), aggregate_window=60.0)
    ids = iter(["n1", "n2"])
    plan = aggregation.plan_commit(
        [first, second], last={}, current={}, pending={}, usage={}, now=now, new_id=lambda: next(ids)
    )
    body = orjson.loads(plan.rows[1].payload)
    assert body["count"] == 2
    assert body["replaces"] == 1
    assert plan.rows[0].payload == render_notification(first, seq=1, notification_id="n1", created_at=now)


CHANNELS = (
    ChannelPlan("web_push", "app default", cap=2, cap_window=3600.0),
    ChannelPlan("email", "digest", due_at=500.0, digest=True),
    ChannelPlan("webhook", "rule"),
)
write_specs = st.lists(
    st.tuples(
        st.sampled_from(["u1", "u2", "u3"]),  # user
        st.sampled_from([None, "g1", "g2"]),  # group key
        st.integers(0, 3),  # event
        st.lists(st.sampled_from(CHANNELS), max_size=3, unique=True),
        st.sampled_from([None, {"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"}]),
    ),
    max_size=12,
)


def _plan(specs: list[tuple[object, ...]]) -> aggregation.CommitPlan:
    writes = {}
    for user, group, n, channels, trace in specs:
        event = _event(group_key=group) if group else _event()
        event = dataclasses.replace(event, id=f"e{n}{group}", actor={"id": f"a{n}"})
        write = InboxWrite(
            "a",
            str(user),
            event,
            60.0,
            3,
            tuple(channels),
            f"r{n}",
            trace,  # type: ignore[arg-type]
        )
        writes[("a", user, event.id)] = write  # fresh writes are distinct
    ids = iter(f"n{i}" for i in range(100))
    return aggregation.plan_commit(
        list(writes.values()),
        last={("a", "u1"): 3, ("a", "u2"): 5},  # as in a store: above every stored row's seq
        current={("a", "u1", "g1"): aggregation.Current(3, "post.liked", 90.0, 2, ({"id": "z"},), 2)},
        pending={},
        usage={("a", "u3", "web_push"): aggregation.Usage(0.0, 2)},
        now=100.0,
        new_id=lambda: next(ids),
    )


@settings(max_examples=200, deadline=None)
@given(write_specs)
def test_the_plain_row_path_plans_what_the_general_path_plans(specs: list[tuple[object, ...]]) -> None:
    fast = _plan(specs)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(aggregation, "_plan_one", aggregation._plan_any)
        general = _plan(specs)
    assert fast == general
