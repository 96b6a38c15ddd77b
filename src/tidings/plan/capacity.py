"""Traffic x unit costs -> processes per role, the store, the broker and bandwidth at the peak.

Each process runs one event loop on one core, so a role's processes are its peak core-seconds per second over
``target_utilisation``, rounded up, and never fewer than ``min_replicas``. A gateway is also bounded by memory:
(memory limit x utilisation - base RSS) / bytes per idle connection. The formulas are written out next to each
field so the tests' docstrings can derive them by hand.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tidings.plan.traffic import DAY, Traffic, traffic
from tidings.plan.units import Units
from tidings.plan.workload import Workload

GIB = float(1 << 30)
PROCESS_MEMORY_GIB = 0.5  # the memory limit of an api or worker process (deploy/k8s/api.yaml, worker.yaml)
HEARTBEAT_FRAME_BYTES = 17  # {"type":"ping"} in a 2-byte WebSocket header
PAGE_BYTES = 8192  # a PostgreSQL page
WAL_AND_PAGES = 2.0  # each row's bytes are written twice: to the WAL, then to its heap and index pages
MONTH = 30.4 * DAY


@dataclass(frozen=True, slots=True)
class Role:
    name: str
    cores: float  # core-seconds per second at the peak
    processes: int
    memory_gib: float
    bound_by: str  # what set the process count: cpu, connections or replicas


@dataclass(frozen=True, slots=True)
class Store:
    peak_write_rows_per_second: float
    peak_reads_per_second: float  # idle polls, resume reads, user requests
    cores: int
    nodes: int  # primaries: cores / store_cores_per_node, rounded up (more than 1: shard by user)
    rows_kept: float
    size_gib: float
    written_per_year_gib: float
    peak_write_mib_per_second: float
    peak_write_iops: float
    peak_read_iops: float


@dataclass(frozen=True, slots=True)
class Broker:
    peak_appends_per_second: float  # events, chunk jobs and split jobs
    peak_log_mib_per_second: float  # in; the workers read as much back
    peak_bus_messages_per_second: float  # one per committed inbox row
    peak_bus_mib_per_second: float


@dataclass(frozen=True, slots=True)
class Bandwidth:
    peak_egress_mib_per_second: float  # frames to clients
    peak_ingress_mib_per_second: float  # events from producers
    egress_gib_per_month: float


@dataclass(frozen=True, slots=True)
class Capacity:
    workload: Workload
    units: Units
    traffic: Traffic
    roles: tuple[Role, ...]
    store: Store
    broker: Broker
    bandwidth: Bandwidth
    connections_per_gateway: int
    largest_fanout_seconds: float  # one post to the largest follower count, all workers sharing its chunks
    gateway_loss_resume_seconds: float  # one gateway lost: its clients resume on the others


def _processes(cores: float, w: Workload) -> int:
    return max(w.min_replicas, math.ceil(round(cores / w.target_utilisation, 9)))


def shell(w: Workload, u: Units) -> tuple[float, float, float]:
    """Frames per core, bytes per connection and resumes per core of the chosen WebSocket server."""
    if w.ws_server == "fastws":
        return u.gateway_deliveries_per_core, u.gateway_bytes_per_connection, u.gateway_resumes_per_core
    return (
        u.gateway_deliveries_per_core_uvicorn,
        u.gateway_bytes_per_connection_uvicorn,
        u.gateway_resumes_per_core_uvicorn,
    )


def connections_per_gateway(w: Workload, u: Units) -> int:
    """(memory limit x utilisation - base RSS) / bytes per connection, for the chosen WebSocket server."""
    usable = w.gateway_memory_gib * GIB * w.target_utilisation - u.process_base_rss_mb * 1e6
    return max(1, int(usable // shell(w, u)[1]))


def api_role(w: Workload, u: Units, t: Traffic) -> Role:
    per_event = w.batch_share / u.api_batch_per_core + (1 - w.batch_share) / u.api_single_per_core
    # A user request (inbox page, count, mark) is costed as one single-endpoint event: assumed, not measured.
    cores = t.peak_events_per_second * per_event + t.peak_user_requests_per_second / u.api_single_per_core
    n = _processes(cores, w)
    return Role("api", cores, n, n * PROCESS_MEMORY_GIB, "cpu" if n > w.min_replicas else "replicas")


def worker_role(w: Workload, u: Units, t: Traffic) -> Role:
    cores = t.peak_rows_per_second / u.worker_rows_per_core
    n = _processes(cores, w)
    return Role("worker", cores, n, n * PROCESS_MEMORY_GIB, "cpu" if n > w.min_replicas else "replicas")


def gateway_role(w: Workload, u: Units, t: Traffic) -> Role:
    rate, each, resumes = shell(w, u)
    frames = t.peak_deliveries_per_second + t.peak_heartbeats_per_second
    cores = frames / rate + t.peak_reconnects_per_second / resumes
    by_cpu = _processes(cores, w)
    by_connections = math.ceil(t.peak_connections / connections_per_gateway(w, u))
    n = max(by_cpu, by_connections)
    bound = "replicas" if n == w.min_replicas else ("connections" if by_connections >= by_cpu else "cpu")
    memory = (n * u.process_base_rss_mb * 1e6 + t.peak_connections * each) / GIB
    return Role("gateway", cores, n, memory, bound)


def store(w: Workload, u: Units, t: Traffic) -> Store:
    reads = t.peak_heartbeats_per_second + 2 * t.peak_reconnects_per_second + t.peak_user_requests_per_second
    write_cores = t.peak_rows_per_second / u.store_rows_per_core
    read_cores = reads / u.store_reads_per_core
    rows_kept = t.rows_per_day * w.retention_days
    cores = math.ceil(round((write_cores + read_cores) / w.target_utilisation, 9))
    write_bytes = t.peak_rows_per_second * w.row_bytes * WAL_AND_PAGES
    return Store(
        peak_write_rows_per_second=t.peak_rows_per_second,
        peak_reads_per_second=reads,
        cores=cores,
        nodes=math.ceil(cores / w.store_cores_per_node),
        rows_kept=rows_kept,
        size_gib=rows_kept * w.row_bytes / GIB,
        written_per_year_gib=t.rows_per_day * 365 * w.row_bytes / GIB,
        peak_write_mib_per_second=write_bytes / (1 << 20),
        peak_write_iops=write_bytes / PAGE_BYTES,
        peak_read_iops=reads * w.store_cache_miss,
    )


def broker(w: Workload, t: Traffic) -> Broker:
    return Broker(
        peak_appends_per_second=t.peak_appends_per_second,
        peak_log_mib_per_second=t.peak_appends_per_second * w.event_bytes / (1 << 20),
        peak_bus_messages_per_second=t.peak_rows_per_second,
        peak_bus_mib_per_second=t.peak_rows_per_second * w.notification_bytes / (1 << 20),
    )


def bandwidth(w: Workload, t: Traffic) -> Bandwidth:
    egress = (
        t.peak_deliveries_per_second * w.notification_bytes
        + t.peak_heartbeats_per_second * HEARTBEAT_FRAME_BYTES
    )
    return Bandwidth(
        peak_egress_mib_per_second=egress / (1 << 20),
        peak_ingress_mib_per_second=t.peak_events_per_second * w.event_bytes / (1 << 20),
        # The month runs at the average, the peak over peak_to_average.
        egress_gib_per_month=egress / w.peak_to_average * MONTH / GIB,
    )


def plan(w: Workload, u: Units) -> Capacity:
    t = traffic(w)
    roles = (api_role(w, u, t), worker_role(w, u, t), gateway_role(w, u, t))
    workers, gateways = roles[1].processes, roles[2].processes
    the_store = store(w, u, t)
    # Every worker takes chunk jobs of the largest post; the store writes them no faster than its cores allow.
    fanout_rate = min(workers * u.worker_rows_per_core, the_store.cores * u.store_rows_per_core)
    per_gateway = t.peak_connections / gateways
    return Capacity(
        workload=w,
        units=u,
        traffic=t,
        roles=roles,
        store=the_store,
        broker=broker(w, t),
        bandwidth=bandwidth(w, t),
        connections_per_gateway=connections_per_gateway(w, u),
        largest_fanout_seconds=t.largest_fanout / fanout_rate if fanout_rate else 0.0,
        gateway_loss_resume_seconds=(
            per_gateway / ((gateways - 1) * shell(w, u)[2]) if gateways > 1 else math.inf
        ),
    )
