"""Notification and event ids (``tidings.core.ids``): 26 Crockford base32 characters, sortable by time, unique."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tidings.core.ids import new_id

CROCKFORD = set("0123456789ABCDEFGHJKMNPQRSTVWXYZ")
# Milliseconds since the epoch up to the year 10889 (the 48-bit time field).
NOW = st.integers(min_value=0, max_value=(1 << 48) - 1).map(lambda ms: ms / 1000)
RANDBITS = st.integers(min_value=0, max_value=(1 << 80) - 1)


def decode(id_: str) -> int:
    return sum(sorted(CROCKFORD).index(c) << (5 * i) for i, c in enumerate(reversed(id_)))


@given(NOW, RANDBITS)
def test_an_id_is_26_crockford_characters_holding_the_millisecond_and_the_random_bits(
    now: float, randbits: int
) -> None:
    id_ = new_id(now, randbits)
    assert len(id_) == 26
    assert set(id_) <= CROCKFORD  # no I, L, O or U: nothing a person could misread
    value = decode(id_)
    assert (value >> 80, value & ((1 << 80) - 1)) == (int(now * 1000), randbits)


@given(NOW, NOW, RANDBITS, RANDBITS)
def test_ids_sort_by_time_whatever_their_random_part(a: float, b: float, ra: int, rb: int) -> None:
    """An id made in an earlier millisecond sorts first, as a plain string (how the stores order them)."""
    if int(a * 1000) < int(b * 1000):
        assert new_id(a, ra) < new_id(b, rb)


def test_ids_made_in_the_same_millisecond_are_distinct() -> None:
    ids = [new_id(1_790_000_000.123) for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    assert len({i[:10] for i in ids}) == 1  # the time prefix is shared, the 80 random bits differ


def test_random_bits_beyond_80_do_not_leak_into_the_time() -> None:
    assert new_id(1.0, (1 << 80) | 5) == new_id(1.0, 5)
    assert new_id(0.0, 0) == "0" * 26


def test_ids_made_on_many_threads_are_distinct() -> None:
    """Each thread draws from its own pool of random bytes: no two threads hand out the same bits."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        batches = list(pool.map(lambda _: [new_id(1_790_000_000.123) for _ in range(2_000)], range(8)))
    ids = [i for batch in batches for i in batch]
    assert len(set(ids)) == len(ids)


def test_a_forked_child_does_not_reuse_its_parents_random_bytes() -> None:
    """A worker process forked after ids were made (pool half used) draws fresh bytes, not the parent's."""
    import os

    new_id(1.0)  # the parent's pool is filled and partly used
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids, to the parent
        os.close(read)
        os.write(write, ",".join(new_id(1.0) for _ in range(50)).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as child_ids:
        theirs = child_ids.read().split(",")
    os.waitpid(pid, 0)
    ours = [new_id(1.0) for _ in range(50)]
    assert len(theirs) == 50
    assert not set(theirs) & set(ours)
