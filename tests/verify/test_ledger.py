"""The accounting of ``tidings verify`` (pure): each kind of failure is found and named, a clean run is clean."""

from __future__ import annotations

from tidings.verify.ledger import Fault, Row, Sent, Stream, account, percentile, recovery_s


def sent(*events: tuple[int, int, str]) -> list[Sent]:
    """(producer, n, user) -> one accepted event to that user, accepted at time n."""
    return [Sent((p, n), f"e{p}-{n}", (user,), float(n)) for p, n, user in events]


def rows(*refs: tuple[int, int], start: int = 1) -> list[Row]:
    return [Row(start + i, f"e{p}-{n}", (p, n), at=n + 0.25) for i, (p, n) in enumerate(refs)]


LEDGER = sent((0, 0, "a"), (1, 0, "a"), (0, 1, "a"), (1, 1, "a"))
INBOX = rows((0, 0), (1, 0), (0, 1), (1, 1))


def test_a_balanced_ledger_is_ok_with_latency_from_2xx_to_receipt() -> None:
    report = account(LEDGER, {"a": INBOX}, [Stream("ws:0", "a", tuple(INBOX))])
    assert report.ok, report.as_dict()
    assert (report.events, report.deliveries) == (4, 4)
    assert report.latency_ms["p50"] == 250.0
    assert report.latency_ms["max"] == 250.0


def test_an_accepted_event_missing_from_the_inbox_is_lost_and_named() -> None:
    inbox = rows((0, 0), (1, 0), (1, 1))
    report = account(LEDGER, {"a": inbox})
    assert report.counts["lost"] == 1
    assert report.lost == ["a: p0 #1 (e0-1) accepted, not in the inbox"]
    assert not report.ok


def test_an_inbox_row_a_live_client_never_received_is_lost() -> None:
    report = account(LEDGER, {"a": INBOX}, [Stream("sse:1", "a", tuple(INBOX[:2] + INBOX[3:]))])
    assert report.counts["lost"] == 1
    assert "sse:1: seq 3 (e0-1) in the inbox, never received" in report.lost


def test_one_event_twice_in_an_inbox_is_a_duplicate_even_under_another_id() -> None:
    again = Row(5, "other-id", (0, 1))
    report = account(LEDGER, {"a": [*INBOX, again]})
    assert report.counts["duplicated"] >= 1
    assert "a: p0 #1 is in the inbox 2 times" in report.duplicated


def test_a_hole_in_the_inbox_seqs_is_a_gap() -> None:
    inbox = [INBOX[0], INBOX[1], Row(4, "e0-1", (0, 1)), Row(5, "e1-1", (1, 1))]
    report = account(LEDGER, {"a": inbox})
    assert report.counts["gaps"] == 1
    assert report.counts["lost"] == 0


def test_a_producers_events_in_another_order_are_out_of_order() -> None:
    inbox = rows((0, 1), (1, 0), (0, 0), (1, 1))
    report = account(LEDGER, {"a": inbox})
    assert report.counts["out_of_order"] == 1
    assert "p0's events out of send order" in report.out_of_order[0]


def test_with_several_workers_lane_order_is_reported_not_failed() -> None:
    inbox = rows((0, 1), (1, 0), (0, 0), (1, 1))
    report = account(LEDGER, {"a": inbox}, lane_order=False)
    assert report.ok
    assert report.reordered == 1


def test_two_producers_interleaved_is_in_order() -> None:
    inbox = rows((1, 0), (1, 1), (0, 0), (0, 1))
    assert account(LEDGER, {"a": inbox}).ok


def test_a_client_receiving_seqs_backwards_is_out_of_order() -> None:
    stream = Stream("ws:0", "a", (INBOX[0], INBOX[2], INBOX[1], INBOX[3]))
    assert account(LEDGER, {"a": INBOX}, [stream]).counts["out_of_order"] == 1


def test_rows_of_events_whose_2xx_was_lost_are_counted_not_failed() -> None:
    inbox = [*INBOX, Row(5, "e0-2", (0, 2))]
    report = account(LEDGER, {"a": inbox})
    assert report.ok
    assert report.unconfirmed == 1


def test_recovery_is_the_longest_stretch_without_a_2xx_across_the_fault() -> None:
    accepted = [9.0, 9.5, 12.5, 13.0]
    assert recovery_s([Fault(10.0, 11.0, 0), Fault(20.0, 21.0, 0)], accepted) == [3.0]


def test_nearest_rank_percentile() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 99) == 4.0
    assert percentile([7.0], 1) == 7.0
