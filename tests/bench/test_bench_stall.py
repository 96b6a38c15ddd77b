"""Issue 12 item 5: a bench run that stops making progress ends as a failed run that says what each side
holds, instead of waiting forever (a fan-out run once stopped at 432k of 600k frames with the driver spinning)."""

from __future__ import annotations

from pathlib import Path

from tidings.bench.counters import Counters
from tidings.bench.fanout import FanoutSpec, run_fanout
from tidings.bench.servers import drive


class _Sink:
    """A server whose messages never reach a client: what a lost frame looks like to the driver."""

    def __init__(self) -> None:
        self.rounds = 0

    def connected(self) -> int:
        return 10

    def publish_round(self) -> int:
        self.rounds += 1
        return 10

    def extra(self) -> dict[str, int]:
        return {"frames_sent": 10 * self.rounds}


async def test_the_driver_stops_when_receipts_stop_and_says_what_it_sent(tmp_path: Path) -> None:
    counters = Counters(tmp_path / "counters", 1, create=True)
    try:
        result = await drive(_Sink(), 10, per_conn=1000, window=4, counters=counters, stall=0.3)
    finally:
        counters.close()
    assert result["stalled"] is True
    assert result["published"] == 40  # the window filled, then nothing more was sent
    diagnosis = result["diagnosis"]
    assert diagnosis["rounds"] == 4
    assert diagnosis["received_by_clients"] == 0
    assert diagnosis["frames_sent"] == 40
    assert diagnosis["server_connected"] == 10


async def test_a_complete_run_reports_no_diagnosis() -> None:
    """The regression of the stall's cause: every stream's first store read ends before the load starts, so
    a gateway fed without inbox rows delivers every frame (the run completes, nothing to diagnose)."""
    result = await run_fanout(FanoutSpec("tidings", connections=50, per_conn=20, client_procs=1))
    assert result["complete"] is True, result.get("diagnosis")
    assert result["received"] == result["published"] == 1000
    assert "diagnosis" not in result
