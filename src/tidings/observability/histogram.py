"""A Prometheus histogram observed without a lock, for the per-frame latency of the gateway's event loop.

``prometheus_client.Histogram.observe`` takes a lock and bumps two ``MutexValue``s (each with its own lock) per
observation; at ~180k deliveries per second that was ~8% of a gateway's samples (docs/performance.md). This
one keeps plain per-bucket integers and a float sum, bumped by the one thread that observes it (the event
loop), and builds the exposition from them when the registry collects: the same family name, buckets, samples
(``_bucket`` cumulative with ``+Inf``, ``_count``, ``_sum``) and help text as a ``Histogram`` without labels.

Observed from one thread only. A scrape from another thread may miss an observation in flight: its buckets are
made cumulative at collection time (``_count`` is the ``+Inf`` bucket), so what it exports is always well-formed.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable, Sequence

from prometheus_client import CollectorRegistry
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.utils import floatToGoString


class LoopHistogram:
    """A label-less histogram for one observing thread; registered in ``registry`` like a ``Histogram``."""

    __slots__ = ("_bounds", "_counts", "_labels", "_sum", "documentation", "name")

    def __init__(
        self, name: str, documentation: str, buckets: Sequence[float], registry: CollectorRegistry
    ) -> None:
        self.name, self.documentation = name, documentation
        self._bounds = (*sorted(float(b) for b in buckets), math.inf)
        self._labels = tuple(floatToGoString(b) for b in self._bounds)  # type: ignore[no-untyped-call]
        self._counts = [0] * len(self._bounds)
        self._sum = 0.0
        registry.register(self)

    def observe(self, value: float) -> None:
        """One observation (seconds; a negative one, clock skew, counts as 0): the first bucket whose upper
        bound is >= ``value`` counts it."""
        self.observe_all((value,))

    def observe_all(self, values: Iterable[float]) -> None:
        """Several observations in one call (a write's frames)."""
        counts, bounds, total = self._counts, self._bounds, 0.0
        for value in values:
            if value > 0.0:
                counts[bisect_left(bounds, value)] += 1
                total += value
            else:
                counts[0] += 1
        self._sum += total

    def describe(self) -> list[HistogramMetricFamily]:
        return [HistogramMetricFamily(self.name, self.documentation)]

    def collect(self) -> list[HistogramMetricFamily]:
        family = HistogramMetricFamily(self.name, self.documentation)
        cumulative, buckets = 0, []
        for label, count in zip(self._labels, list(self._counts), strict=True):
            cumulative += count
            buckets.append((label, float(cumulative)))
        family.add_metric([], buckets, self._sum)
        return [family]
