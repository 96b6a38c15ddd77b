"""Live clients that note when each notification arrived, and the latency figures the chaos runs report."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from e2e.clients import Notification, SseClient, WsClient


class Arrivals:
    """Mixed into a client: the monotonic time each event id first arrived."""

    arrived: dict[str, float]

    def _accept(self, notification: Notification) -> bool:
        self.arrived.setdefault(notification["event_id"], time.monotonic())
        return super()._accept(notification)  # type: ignore[misc, no-any-return]


class TimedWs(Arrivals, WsClient):
    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.arrived = {}


class TimedSse(Arrivals, SseClient):
    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.arrived = {}


def latencies(sent_at: Mapping[str, float], arrived: Mapping[str, float]) -> list[float]:
    """Seconds from each 2xx to its first arrival, for the events that arrived."""
    return sorted(arrived[e] - t for e, t in sent_at.items() if e in arrived)


def percentiles(values: Sequence[float]) -> dict[str, float]:
    """p50, p90, p99 and max in milliseconds (of sorted ``values``); empty when there are none."""
    if not values:
        return {}

    def at(q: float) -> float:
        return round(1000 * values[min(len(values) - 1, int(q * len(values)))])

    return {"p50": at(0.5), "p90": at(0.9), "p99": at(0.99), "max": round(1000 * values[-1])}
