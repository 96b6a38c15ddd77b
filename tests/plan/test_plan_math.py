"""The planner on one worked example whose every answer is derived by hand below (pure, no I/O).

The workload (numbers chosen so a day divides evenly: 86,400 daily users, 86,400 seconds a day):

- direct events: 1 per user per day = 86,400/day; recipients {1: 0.75, 5: 0.25}, mean 0.75 + 1.25 = 2, so
  172,800 rows/day;
- posts: 0.01 per user per day = 864/day; followers {100: 0.5, 3,000: 0.5}, mean 50 + 1,500 = 1,550, so
  1,339,200 rows/day. A 3,000-follower post is over one chunk (1,000): 3 chunk jobs + ceil(3/100) = 1 split
  job = 4 jobs, so 864 x 0.5 x 4 = 1,728 jobs/day;
- rows/day = 172,800 + 1,339,200 = 1,512,000 (17.5/s on average); at peak_to_average 4: 70 rows/s;
- events/day = 86,400 + 864 = 87,264, peak 87,264 x 4 / 86,400 = 4.04/s; log appends add the jobs:
  88,992 x 4 / 86,400 = 4.12/s;
- rows of chunk-job posts: 864 x 0.5 x 3,000 = 1,296,000 of 1,512,000 = 6/7;
- connections: 86,400 x 0.25 x 2 = 43,200; heartbeats 43,200 / 15 = 2,880/s; live frames at the peak
  70 x 0.25 x 2 = 35/s; reconnects 43,200 x 2 / 3,600 = 24/s; user requests 86,400 x 10 x 4 / 86,400 = 40/s.

Units (round numbers, not the bench's): API 100 events/s single, 1,000 batched; worker 10 rows/s; store 10
rows/s and 2,968 reads/s per core; gateway 100 frames/s and 12 resumes/s per core, 10,000 B per connection,
36.870912 MB base RSS (so a 1 GiB gateway at utilisation 0.5 holds (536,870,912 - 36,870,912) / 10,000 =
50,000 connections).
"""

from __future__ import annotations

import math

import pytest

from tidings.plan.capacity import plan
from tidings.plan.costs import HOURS, Prices, monthly
from tidings.plan.traffic import jobs_for, traffic
from tidings.plan.units import Units
from tidings.plan.workload import Workload

WORKLOAD = Workload(
    daily_users=86_400,
    events_per_user_per_day=1,
    recipients={1: 0.75, 5: 0.25},
    posts_per_user_per_day=0.01,
    followers={100: 0.5, 3_000: 0.5},
    peak_to_average=4,
    batch_share=0.5,
    user_requests_per_user_per_day=10,
    peak_concurrent_share=0.25,
    connections_per_user=2,
    reconnects_per_connection_per_hour=2,
    retention_days=30,
    channels={"email": 0.1},
    notification_bytes=1_000,
    event_bytes=2_000,
    row_bytes=1_024,
    gateway_memory_gib=1,
    target_utilisation=0.5,
    min_replicas=2,
    store_cache_miss=0.05,
    store_cores_per_node=8,
    heartbeat_interval=15,
    fanout_chunk=1_000,
    fanout_split=100,
)
UNITS = Units(
    gateway_deliveries_per_core=100,
    gateway_bytes_per_connection=10_000,
    process_base_rss_mb=36.870912,
    gateway_resumes_per_core=12,
    api_single_per_core=100,
    api_batch_per_core=1_000,
    worker_rows_per_core=10,
    store_rows_per_core=10,
    store_reads_per_core=2_968,
)


def test_jobs_for_a_post() -> None:
    """One chunk holds 1,000: no jobs; 3,000 -> 3 chunks + 1 split; 250,000 -> 250 chunks + 3 splits."""
    assert jobs_for(1_000, 1_000, 100) == 0
    assert jobs_for(3_000, 1_000, 100) == 4
    assert jobs_for(250_000, 1_000, 100) == 253


def test_traffic_of_the_worked_example() -> None:
    """Every line of the module docstring's derivation."""
    t = traffic(WORKLOAD)
    assert (t.mean_recipients, t.mean_followers) == (2, 1_550)
    assert (t.direct_rows_per_day, t.topic_rows_per_day, t.rows_per_day) == (172_800, 1_339_200, 1_512_000)
    assert t.average_rows_per_second == pytest.approx(17.5)
    assert t.peak_rows_per_second == pytest.approx(70)
    assert t.events_per_day == 87_264
    assert t.peak_events_per_second == pytest.approx(4.04)
    assert t.chunk_jobs_per_day == pytest.approx(1_728)
    assert t.peak_appends_per_second == pytest.approx(4.12)
    assert t.celebrity_rows_share == pytest.approx(6 / 7)
    assert t.largest_fanout == 3_000
    assert t.peak_connections == pytest.approx(43_200)
    assert t.peak_heartbeats_per_second == pytest.approx(2_880)
    assert t.peak_deliveries_per_second == pytest.approx(35)
    assert t.peak_reconnects_per_second == pytest.approx(24)
    assert t.peak_user_requests_per_second == pytest.approx(40)
    assert t.offline_per_day == {"email": pytest.approx(151_200)}


def test_processes_per_role() -> None:
    """api: 4.04 events/s x (0.5/1,000 + 0.5/100 = 0.0055 core-s) + 40 requests / 100 = 0.42222 cores; / 0.5
    = 0.84 -> 1, raised to the 2 replicas. worker: 70 / 10 = 7 cores / 0.5 = 14 processes. gateway: (35 +
    2,880 frames) / 100 + 24 resumes / 12 = 31.15 cores / 0.5 = 62.3 -> 63 by CPU; by connections 43,200 /
    50,000 -> 1; so 63, bound by CPU."""
    capacity = plan(WORKLOAD, UNITS)
    api, worker, gateway = capacity.roles
    assert api.cores == pytest.approx(0.422222, rel=1e-5)
    assert (api.processes, api.bound_by) == (2, "replicas")
    assert (worker.cores, worker.processes, worker.bound_by) == (pytest.approx(7), 14, "cpu")
    assert capacity.connections_per_gateway == 50_000
    assert (gateway.cores, gateway.processes, gateway.bound_by) == (pytest.approx(31.15), 63, "cpu")
    # 63 base RSS + 43,200 connections x 10,000 B.
    assert gateway.memory_gib == pytest.approx((63 * 36.870912e6 + 432e6) / 2**30)


def test_store_broker_and_bandwidth() -> None:
    """Store: reads 2,880 polls + 2 x 24 resume reads + 40 requests = 2,968/s = 1 core; writes 70 / 10 = 7
    cores; (7 + 1) / 0.5 = 16 cores, 2 primaries of 8. Rows kept 1,512,000 x 30 = 45,360,000, x 1,024 B =
    43.26 GiB. Written bytes 70 x 1,024 x 2 = 143,360 B/s = 0.1367 MiB/s = 17.5 pages/s; read IOPS 2,968 x
    0.05 = 148.4. Broker: 4.12 appends/s x 2,000 B; 70 bus messages/s x 1,000 B. Bandwidth: (35 x 1,000 +
    2,880 x 17) B/s = 83,960 B/s at the peak; a month at a quarter of it: 20,990 x 30.4 x 86,400 B."""
    capacity = plan(WORKLOAD, UNITS)
    s, b, bw = capacity.store, capacity.broker, capacity.bandwidth
    assert s.peak_reads_per_second == pytest.approx(2_968)
    assert (s.cores, s.nodes) == (16, 2)
    assert s.rows_kept == 45_360_000
    assert s.size_gib == pytest.approx(45_360_000 / 2**20)
    assert s.peak_write_mib_per_second == pytest.approx(143_360 / 2**20)
    assert s.peak_write_iops == pytest.approx(17.5)
    assert s.peak_read_iops == pytest.approx(148.4)
    assert b.peak_log_mib_per_second == pytest.approx(4.12 * 2_000 / 2**20)
    assert b.peak_bus_messages_per_second == pytest.approx(70)
    assert bw.peak_egress_mib_per_second == pytest.approx(83_960 / 2**20)
    assert bw.egress_gib_per_month == pytest.approx(20_990 * 30.4 * 86_400 / 2**30)


def test_celebrity_fanout_and_gateway_loss() -> None:
    """The 3,000-follower post: 14 workers x 10 rows/s = 140 rows/s (the store's 16 cores allow 160), so
    3,000 / 140 = 21.43 s. One of 63 gateways lost: 43,200 / 63 = 685.7 clients resume on 62 others at 12/s
    each (744/s): 0.92 s."""
    capacity = plan(WORKLOAD, UNITS)
    assert capacity.largest_fanout_seconds == pytest.approx(3_000 / 140)
    assert capacity.gateway_loss_resume_seconds == pytest.approx(43_200 / 63 / 744)


def test_connections_can_bind_the_gateways() -> None:
    """With 20x the connections (connections_per_user 40: 864,000) and frames per core raised so CPU needs
    little: 864,000 / 50,000 = 17.28 -> 18 gateways, bound by connections."""
    workload = WORKLOAD.replace(connections_per_user=40)
    units = UNITS.replace("test", gateway_deliveries_per_core=1e9, gateway_resumes_per_core=1e9)
    gateway = plan(workload, units).roles[2]
    assert (gateway.processes, gateway.bound_by) == (18, "connections")


def test_monthly_cost_and_cost_per_million() -> None:
    """Only cores priced (1 a core-hour): 2 + 14 + 63 = 79 processes x 729.6 h = 57,638.4 a month. Rows a
    month 1,512,000 x 30.4 = 45,964,800, so 57,638.4 / 45.9648 = 1,253.97 per million notifications."""
    zero = Prices(
        core_hour=1, memory_gib_hour=0, db_core_hour=0, storage_gib_month=0, broker_node_hour=0, egress_gib=0
    )
    costs = monthly(plan(WORKLOAD, UNITS), zero)
    assert round(HOURS, 6) == 729.6
    assert costs.total == pytest.approx(79 * 729.6)
    assert costs.rows_per_month == pytest.approx(45_964_800)
    assert costs.per_million_notifications == pytest.approx(57_638.4 / 45.9648)
    database = monthly(
        plan(WORKLOAD, UNITS),
        Prices(
            core_hour=0,
            memory_gib_hour=0,
            db_core_hour=1,
            storage_gib_month=0,
            broker_node_hour=0,
            egress_gib=0,
        ),
    )
    assert database.total == pytest.approx(2 * 16 * 729.6)  # primary and standby, 16 cores each
    assert not math.isinf(database.per_million_notifications)


def test_the_uvicorn_shell_uses_its_own_unit_costs() -> None:
    """ws_server uvicorn: 50 frames/s, 20,000 B per connection and 6 resumes/s per core. Gateway cores =
    2,915 / 50 + 24 / 6 = 58.3 + 4 = 62.3, / 0.5 = 124.6 -> 125 processes; connections per gateway
    500,000,000 / 20,000 = 25,000; one lost: 43,200 / 125 = 345.6 clients over 124 x 6 = 744/s."""
    units = UNITS.replace(
        "test",
        gateway_deliveries_per_core_uvicorn=50,
        gateway_bytes_per_connection_uvicorn=20_000,
        gateway_resumes_per_core_uvicorn=6,
    )
    capacity = plan(WORKLOAD.replace(ws_server="uvicorn"), units)
    gateway = capacity.roles[2]
    assert (gateway.cores, gateway.processes) == (pytest.approx(62.3), 125)
    assert capacity.connections_per_gateway == 25_000
    assert capacity.gateway_loss_resume_seconds == pytest.approx(345.6 / 744)
