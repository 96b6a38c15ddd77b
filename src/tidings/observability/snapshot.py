"""The current values of this process's metrics as one small JSON object, for the admin page.

Counters and histograms are cumulative (as Prometheus exposes them); the page turns two snapshots into rates
and quantiles over the interval between them, so the server keeps no history and no background task.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from prometheus_client.metrics_core import Metric

from tidings.observability import metrics
from tidings.observability.journal import JOURNAL

# Counter family name (without ``_total``) -> key in the snapshot; summed over all their labels.
COUNTERS = {
    "tidings_http_requests": "requests",
    "tidings_events_accepted": "accepted",
    "tidings_events_rejected": "rejected",
    "tidings_inbox_writes": "inbox_writes",
    "tidings_outbox_overflows": "overflows",
    "tidings_slow_consumer_closes": "slow_consumer_closes",
}
HISTOGRAMS = {
    "tidings_http_request_duration_seconds": "http",
    "tidings_accepted_to_stored_seconds": "accepted_to_stored",
    "tidings_accepted_to_delivered_seconds": "accepted_to_delivered",
}


def snapshot() -> dict[str, Any]:
    """Counters, gauges and histograms (bucket bounds with cumulative counts, summed over labels)."""
    families = {family.name: family for family in metrics.REGISTRY.collect()}
    counters = {key: _sum(families.get(name), "_total") for name, key in COUNTERS.items()}
    counters.update(_http_errors(families.get("tidings_http_requests")))
    counters["deliveries"] = _sum(families.get("tidings_deliveries"), "_total", result="sent")
    events, deliveries = JOURNAL.sizes()
    return {
        "counters": counters,
        "funnel": _by_label(families.get("tidings_funnel"), "_total", "stage"),
        "connections": _by_label(families.get("tidings_connections"), "", "transport"),
        "lag": _sum(families.get("tidings_log_lag"), ""),
        "histograms": {key: _histogram(families.get(name)) for name, key in HISTOGRAMS.items()},
        "process": {
            "cpu_seconds": _sum(families.get("process_cpu_seconds"), "_total"),
            "resident_bytes": _sum(families.get("process_resident_memory_bytes"), ""),
            "open_fds": _sum(families.get("process_open_fds"), ""),
            "max_fds": _sum(families.get("process_max_fds"), ""),
        },
        "journal": {"events": events, "deliveries": deliveries},
        "offline": {  # the senders' outcomes, and the shared ledger as this process last sampled it
            "sends": _by_label(families.get("tidings_offline_sends"), "_total", "result"),
            "sends_by_channel": _by_two(families.get("tidings_offline_sends"), "_total", "channel", "result"),
            "queue_depth": _sum(families.get("tidings_offline_queue_depth"), ""),
            "oldest_due_seconds": _sum(families.get("tidings_offline_oldest_due_seconds"), ""),
            "dead_letters": _sum(families.get("tidings_dead_letters"), ""),
            "webhooks_disabled": _sum(families.get("tidings_webhooks_disabled"), ""),
        },
    }


def _samples(family: Metric | None, suffix: str) -> Iterable[Any]:
    if family is None:
        return ()
    name = family.name + suffix
    return (sample for sample in family.samples if sample.name == name)


def _sum(family: Metric | None, suffix: str, **labels: str) -> float:
    return float(
        sum(s.value for s in _samples(family, suffix) if all(s.labels.get(k) == v for k, v in labels.items()))
    )


def _by_label(family: Metric | None, suffix: str, label: str) -> dict[str, float]:
    totals: dict[str, float] = defaultdict(float)
    for sample in _samples(family, suffix):
        totals[sample.labels.get(label, "")] += sample.value
    return dict(totals)


def _by_two(family: Metric | None, suffix: str, outer: str, inner: str) -> dict[str, dict[str, float]]:
    totals: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for sample in _samples(family, suffix):
        totals[sample.labels.get(outer, "")][sample.labels.get(inner, "")] += sample.value
    return {key: dict(values) for key, values in totals.items()}


def _http_errors(family: Metric | None) -> dict[str, float]:
    """Answers with a 5xx status (the server failed) and with a 4xx one (the client's request was refused)."""
    server = client = 0.0
    for sample in _samples(family, "_total"):
        status = sample.labels.get("status", "")
        if status.startswith("5"):
            server += sample.value
        elif status.startswith("4"):
            client += sample.value
    return {"errors_5xx": server, "errors_4xx": client}


def _histogram(family: Metric | None) -> dict[str, Any]:
    buckets: dict[float, float] = defaultdict(float)
    for sample in _samples(family, "_bucket"):
        buckets[float(sample.labels["le"])] += sample.value
    bounds = sorted(buckets)
    return {
        "le": [bound if bound != float("inf") else None for bound in bounds],  # JSON has no infinity
        "counts": [buckets[bound] for bound in bounds],
        "count": _sum(family, "_count"),
        "sum": _sum(family, "_sum"),
    }
