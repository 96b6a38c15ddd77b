"""Unit costs: what one core (one process: an event loop uses one core) of each role does.

Every default is a median measured by ``tidings bench`` on the reference machine (bench/results/final/, the
tables of docs/performance.md), or derived from one in the comment next to it; the few that the suite does not
measure say ``assumed`` in their source and are named as such in the output. ``--bench FILE`` replaces the
measured ones with the medians of the user's own run (``tidings.plan.bench``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

# The base RSS of a gateway process holding nothing: RSS minus connections x bytes each, median of the six
# `tidings` runs of connections.json (10,000 and 19,000 connections; e.g. 167.9 MB - 10,000 x 9,587 B = 72.0
# MB, 245.4 MB - 19,000 x 9,324 B = 68.2 MB).
_BASE_RSS_MB = 70.1


@dataclass(frozen=True, slots=True)
class Units:
    """Per-core rates and per-item sizes. ``sources`` names where each field's value came from."""

    # Gateway: unicast deliveries per server CPU-second, fastws with the GC setting `tidings` applies
    # (fanout-quiet.json, kind tidings-gc: 133,869/s at 0.99 of a core = 135,825 per CPU-second).
    gateway_deliveries_per_core: float = 135_825.0
    # The same through uvicorn's ASGI shell (fanout-quiet.json, kind tidings-uvicorn).
    gateway_deliveries_per_core_uvicorn: float = 62_473.0
    # Idle memory per authenticated connection: median of the six `tidings` runs of connections.json (9,587 B
    # at 10,000, 9,313 B at 19,000: 9,441.5 B); the uvicorn shell's three runs at 10,000.
    gateway_bytes_per_connection: float = 9_441.5
    gateway_bytes_per_connection_uvicorn: float = 40_644.0
    process_base_rss_mb: float = _BASE_RSS_MB
    # Resume storm: 10,000 clients with a 10-row backlog each resumed in 20.9 s on one core
    # (latency-ingest-resume-quiet.json, kind tidings): 478 resumes per second.
    gateway_resumes_per_core: float = 10_000 / 20.89
    # The same through uvicorn's ASGI shell: 10,000 in 37.27 s (kind tidings-uvicorn): 268 per second.
    gateway_resumes_per_core_uvicorn: float = 10_000 / 37.27
    # API: events accepted per server CPU-second, the median over the runs of rate / server CPU
    # (latency-ingest-resume-quiet.json, ingest): single endpoint 1,877/s at 1.019 of a core in the median run;
    # batches of 500, 19,721/s at 1.00.
    api_single_per_core: float = 1_842.0
    api_batch_per_core: float = 19_720.9
    # Worker: inbox rows per second, one worker process on PostgreSQL (celebrity-growth.json and
    # celebrity-more.json, kind postgresql: 1M rows in a median 168.06 s = 5,950 rows/s; the worker is CPU-bound
    # at ~130 us per row while PostgreSQL has the other core).
    worker_rows_per_core: float = 1_000_000 / 168.06
    # PostgreSQL: in the same runs PostgreSQL kept up with that worker on at most the other core, so one core
    # writes at least 5,950 rows/s; the planner uses that floor as the store's rate per core (conservative).
    store_rows_per_core: float = 1_000_000 / 168.06
    # Index lookups per store core (idle polls, resume reads, inbox pages): assumed, not measured.
    store_reads_per_core: float = 20_000.0
    sources: dict[str, str] = field(default_factory=dict)

    def replace(self, source: str, **values: float) -> Units:
        """A copy with ``values`` set and their source recorded."""
        sources = dict(self.sources)
        sources.update(dict.fromkeys(values, source))
        return dataclasses.replace(self, sources=sources, **values)

    def source(self, name: str) -> str:
        return self.sources.get(name, DEFAULT_SOURCES.get(name, "shipped default"))


DEFAULT_SOURCES: dict[str, str] = {
    "gateway_deliveries_per_core": "bench/results/final/fanout-quiet.json (tidings-gc)",
    "gateway_deliveries_per_core_uvicorn": "bench/results/final/fanout-quiet.json (tidings-uvicorn)",
    "gateway_bytes_per_connection": "bench/results/final/connections.json (tidings)",
    "gateway_bytes_per_connection_uvicorn": "bench/results/final/connections.json (tidings-uvicorn @10000)",
    "process_base_rss_mb": "bench/results/final/connections.json (RSS minus connections)",
    "gateway_resumes_per_core": "bench/results/final/latency-ingest-resume-quiet.json (resume)",
    "gateway_resumes_per_core_uvicorn": "bench/results/final/latency-ingest-resume-quiet.json (resume uvicorn)",
    "api_single_per_core": "bench/results/final/latency-ingest-resume-quiet.json (ingest single)",
    "api_batch_per_core": "bench/results/final/latency-ingest-resume-quiet.json (ingest x500)",
    "worker_rows_per_core": "bench/results/final/celebrity-*.json (postgresql)",
    "store_rows_per_core": "bench/results/final/celebrity-*.json (postgresql, a floor)",
    "store_reads_per_core": "assumed (not measured by tidings bench)",
}

DEFAULT_UNITS = Units()
