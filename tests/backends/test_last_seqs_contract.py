"""``Inbox.last_seqs`` over every store backend: for many users at once, the same answers as ``last_seq`` one by
one (0 for a user with nothing), for every user asked, across apps and past one statement's chunk of users."""

from __future__ import annotations

from test_retention_contract import notify

from tidings.ports import Store


async def test_last_seqs_answer_as_last_seq_does_for_every_user_asked(store: Store) -> None:
    await notify(store, "alice", 5)
    await notify(store, "bob", 2)
    users = [("app1", "alice"), ("app1", "bob"), ("app1", "nobody"), ("other", "alice")]
    found = await store.inbox.last_seqs(users)
    assert found == {("app1", "alice"): 5, ("app1", "bob"): 2, ("app1", "nobody"): 0, ("other", "alice"): 0}
    for app, user in users:
        assert found[(app, user)] == await store.inbox.last_seq(app, user)
    assert await store.inbox.last_seqs([]) == {}


async def test_last_seqs_of_more_users_than_one_statement_takes(store: Store) -> None:
    """6,000 users (past both engines' chunk sizes), a few of them with rows: each gets its own answer."""
    for user in ("u0000", "u2500", "u5999"):
        await notify(store, user, 3)
    users = [("app1", f"u{i:04d}") for i in range(6000)]
    found = await store.inbox.last_seqs(users)
    assert len(found) == 6000
    assert {key: seq for key, seq in found.items() if seq} == {
        ("app1", "u0000"): 3,
        ("app1", "u2500"): 3,
        ("app1", "u5999"): 3,
    }
