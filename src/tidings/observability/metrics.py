"""Prometheus metrics, in one module-level registry that ``GET /metrics`` renders.

Each metric is a module attribute named like the metric it exposes without the ``tidings_`` prefix
(``events_accepted_total`` is ``tidings_events_accepted_total``), so every component shares one instance.
Label values come from small fixed sets only (route templates, priorities, transports, result and
reason codes): never a user, event, token or raw path, because every distinct label value is a new
time series and an attacker could otherwise grow them without bound.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)

from tidings import __version__
from tidings.observability.histogram import LoopHistogram

# No ``*_created`` series: Prometheus does not ingest them (without a feature flag), and they would double the
# series of every counter and histogram. (A process-wide switch of prometheus_client; Tidings owns its process.)
disable_created_metrics()  # type: ignore[no-untyped-call]

REGISTRY = CollectorRegistry()
# process_cpu_seconds_total, process_open_fds / process_max_fds, process_resident_memory_bytes: the saturation
# signals (one Python process uses at most one core).
ProcessCollector(registry=REGISTRY)

# Seconds: from well under a millisecond (in-process paths) to the tens of seconds a backlog can take.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# HTTP answers: fewer buckets, because this histogram is multiplied by every (method, route, status) seen.
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
FANOUT_BUCKETS = (1, 2, 5, 10, 50, 100, 1_000, 10_000, 100_000, 1_000_000)

http_requests_total = Counter(
    "tidings_http_requests_total",
    "HTTP requests answered, by method, route template and status.",
    ["method", "route", "status"],
    registry=REGISTRY,
)
http_request_duration_seconds = Histogram(
    "tidings_http_request_duration_seconds",
    "Time from a request's arrival to the end of its response, by method, route template and status.",
    ["method", "route", "status"],
    buckets=HTTP_BUCKETS,
    registry=REGISTRY,
)
events_accepted_total = Counter(
    "tidings_events_accepted_total",
    "Events appended durably to the log (idempotent replays not counted), by priority.",
    ["priority"],
    registry=REGISTRY,
)
events_rejected_total = Counter(
    "tidings_events_rejected_total",
    "Events refused by the API, by error code (validation_failed, rate_limited...).",
    ["reason"],
    registry=REGISTRY,
)
fanout_recipients = Histogram(
    "tidings_fanout_recipients",
    "Recipients one event expanded to.",
    buckets=FANOUT_BUCKETS,
    registry=REGISTRY,
)
inbox_writes_total = Counter(
    "tidings_inbox_writes_total",
    "Inbox rows committed.",
    registry=REGISTRY,
)
deliveries_total = Counter(
    "tidings_deliveries_total",
    "Notifications handed to a live transport, by transport (ws, sse...) and result (sent, dropped...).",
    ["transport", "result"],
    registry=REGISTRY,
)
connections = Gauge(
    "tidings_connections",
    "Open live connections, by transport.",
    ["transport"],
    registry=REGISTRY,
)
log_lag = Gauge(
    "tidings_log_lag",
    "Events appended to the log and not yet acked by the fan-out workers.",
    registry=REGISTRY,
)
outbox_overflows_total = Counter(
    "tidings_outbox_overflows_total",
    "Per-connection send queues that overflowed, by transport.",
    ["transport"],
    registry=REGISTRY,
)
slow_consumer_closes_total = Counter(
    "tidings_slow_consumer_closes_total",
    "Connections closed because the client read too slowly (it resumes from the store).",
    registry=REGISTRY,
)
accepted_to_stored_seconds = Histogram(
    "tidings_accepted_to_stored_seconds",
    "From an event's 202 to its inbox commit.",
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
# Observed per delivered frame on the gateway's event loop: a lock-free histogram (``histogram.LoopHistogram``),
# exported exactly like a ``Histogram`` of the same name and buckets.
accepted_to_delivered_seconds = LoopHistogram(
    "tidings_accepted_to_delivered_seconds",
    "From an event's 202 to a notification frame handed to a live connection.",
    LATENCY_BUCKETS,
    REGISTRY,
)

# The delivery funnel, stage by stage. ``accepted`` counts events; every later stage counts notifications
# (one per recipient): planned by the fan-out, committed to an inbox, written to a live connection (once per
# connection: two devices count twice), then marked seen and read by the user.
FUNNEL_STAGES = ("accepted", "fanned_out", "stored", "delivered_live", "seen", "read")
funnel_total = Counter(
    "tidings_funnel_total",
    "The delivery funnel: events accepted, then notifications fanned out, stored, delivered live, seen, read.",
    ["stage"],
    registry=REGISTRY,
)
FUNNEL = {stage: funnel_total.labels(stage) for stage in FUNNEL_STAGES}  # every stage exported from the start

# Offline senders (``tidings.sender``): label values are channel names and outcome statuses only.
SEND_BUCKETS = (
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    900.0,
    3600.0,
    4 * 3600.0,
    86400.0,
)
offline_sends_total = Counter(
    "tidings_offline_sends_total",
    "Offline delivery attempts, by channel and result (sent, retry, dead, failed, cancelled, expired).",
    ["channel", "result"],
    registry=REGISTRY,
)
offline_retries_total = Counter(
    "tidings_offline_retries_total",
    "Offline delivery attempts that will be tried again, by channel.",
    ["channel"],
    registry=REGISTRY,
)
stored_to_provider_seconds = Histogram(
    "tidings_stored_to_provider_seconds",
    "From a notification's inbox commit (a few ms after its 202) to a provider accepting its offline delivery.",
    ["channel"],
    buckets=SEND_BUCKETS,
    registry=REGISTRY,
)
dead_letters = Gauge(
    "tidings_dead_letters",
    "Dead deliveries and dead fan-out events waiting for an operator (sampled by the senders).",
    registry=REGISTRY,
)
offline_queue_depth = Gauge(
    "tidings_offline_queue_depth",
    "Offline deliveries due now and not leased to a sender (sampled by the senders).",
    registry=REGISTRY,
)
offline_oldest_due_seconds = Gauge(
    "tidings_offline_oldest_due_seconds",
    "Age of the oldest offline delivery that is due and not leased (0: none).",
    registry=REGISTRY,
)
webhooks_disabled = Gauge(
    "tidings_webhooks_disabled",
    "Webhook endpoints disabled after failing for a day (sampled by the senders).",
    registry=REGISTRY,
)

build_info = Gauge(
    "tidings_build_info", "Always 1; the version of this process.", ["version"], registry=REGISTRY
)
build_info.labels(__version__).set(1)


def render() -> tuple[bytes, str]:
    """The exposition text of every metric, and its content type."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
