"""The pure retry / expiry / dead-letter decisions of ``core.delivery``, property-tested (no event loop)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tidings.core.delivery import (
    RetryPolicy,
    delay,
    expired,
    message_key,
    parse_schedule,
    policies,
    settle,
)

rands = st.floats(min_value=0.0, max_value=0.999999)
attempts = st.integers(min_value=1, max_value=50)
policy_st = st.builds(
    RetryPolicy,
    base=st.floats(min_value=0.01, max_value=60),
    cap=st.floats(min_value=1, max_value=86400),
    max_attempts=st.integers(min_value=1, max_value=20),
    schedule=st.one_of(
        st.just(()), st.lists(st.floats(min_value=0, max_value=3600), min_size=1, max_size=8).map(tuple)
    ),
)


@given(policy_st, attempts, rands, st.one_of(st.none(), st.floats(min_value=0, max_value=10**6)))
def test_a_retry_waits_at_least_retry_after_and_within_the_bound(
    policy: RetryPolicy, tries: int, rand: float, retry_after: float | None
) -> None:
    wait = delay(policy, tries, rand, retry_after)
    assert wait >= (retry_after or 0.0)
    bound = max(policy.schedule) * 1.25 if policy.schedule else policy.cap
    assert wait <= max(bound, retry_after or 0.0)


@given(policy_st, attempts, rands, st.floats(min_value=0, max_value=2e9))
def test_attempts_are_bounded_then_dead(policy: RetryPolicy, tries: int, rand: float, now: float) -> None:
    settled = settle("retry", tries, policy, now=now, rand=rand)
    if tries >= policy.max_attempts:
        assert settled.status == "dead"
    else:
        assert settled.status == "pending"
        assert settled.next_at >= now


@given(policy_st, attempts, rands)
def test_every_other_result_is_final(policy: RetryPolicy, tries: int, rand: float) -> None:
    assert settle("sent", tries, policy, now=0, rand=rand).status == "sent"
    gone = settle("gone", tries, policy, now=0, rand=rand)
    assert (gone.status, gone.remove_target) == ("failed", True)
    assert settle("failed", tries, policy, now=0, rand=rand).status == "dead"


@given(
    st.integers(min_value=0, max_value=2 * 10**9),
    st.one_of(st.none(), st.integers(min_value=0, max_value=10**7)),
    st.integers(min_value=0, max_value=10**7),
)
def test_expiry_is_ttl_after_creation(created: int, ttl: int | None, later: int) -> None:
    """Whole seconds: float sums of far-apart magnitudes round, and the rule is about seconds."""
    assert expired(float(created), None if ttl is None else float(ttl), float(created + later)) == (
        ttl is not None and later > ttl
    )


@given(
    st.text(),
    st.text(),
    st.lists(st.integers(min_value=1), min_size=1),
    st.sampled_from(["web_push", "email"]),
    st.text(),
)
def test_the_message_key_is_stable_per_notification_channel_and_target(
    app: str, user: str, seqs: list[int], channel: str, target: str
) -> None:
    key = message_key(app, user, tuple(seqs), channel, target)
    assert key == message_key(app, user, tuple(seqs), channel, target)
    assert key != message_key(app, user, tuple(seqs), channel, target + "x")
    assert key.startswith("msg_")


def test_webhooks_follow_their_schedule() -> None:
    chosen = policies(5.0, 3600.0, 8, parse_schedule("5, 30,300"))
    assert chosen["webhook"].max_attempts == 4
    assert chosen["email"].max_attempts == 8
    assert delay(chosen["webhook"], 2, 0.5, None) == 30.0
    assert delay(chosen["webhook"], 9, 0.5, None) == 300.0
