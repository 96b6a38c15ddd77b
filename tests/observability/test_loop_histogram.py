"""The lock-free accepted->delivered histogram (``observability.histogram``) exports exactly what a
``prometheus_client.Histogram`` of the same name and buckets exports for the same observations."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from tidings.observability import metrics
from tidings.observability.histogram import LoopHistogram


def test_the_exposition_is_that_of_a_prometheus_histogram() -> None:
    values = [0.0, 0.0004, 0.0005, 0.003, 0.003, 0.2, 1.0, 7.5, 29.0, 31.0, 1e6, -0.5]
    theirs, ours = CollectorRegistry(), CollectorRegistry()
    reference = Histogram("t_seconds", "Help text.", buckets=metrics.LATENCY_BUCKETS, registry=theirs)
    for value in values:
        reference.observe(max(0.0, value))  # what the funnel did before: negative (clock skew) as 0
    histogram = LoopHistogram("t_seconds", "Help text.", metrics.LATENCY_BUCKETS, ours)
    histogram.observe_all(values[:5])
    for value in values[5:]:
        histogram.observe(value)
    assert generate_latest(ours) == generate_latest(theirs)


def test_the_metric_keeps_its_name_and_buckets() -> None:
    exposed = metrics.render()[0].decode()
    assert "# TYPE tidings_accepted_to_delivered_seconds histogram" in exposed
    for bound in ("0.0005", "2.5", "30.0", "+Inf"):
        assert f'tidings_accepted_to_delivered_seconds_bucket{{le="{bound}"}}' in exposed
    assert "tidings_accepted_to_delivered_seconds_count " in exposed
    assert "tidings_accepted_to_delivered_seconds_sum " in exposed
