"""A plan as a plain-text table (the default) or as JSON (``--json``): the same numbers either way."""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

from tidings.plan.capacity import Capacity
from tidings.plan.costs import Costs, Prices
from tidings.plan.traffic import DAY
from tidings.plan.units import Units


def _n(value: float) -> str:
    """Thousands separators; one decimal under 100, none above; inf as 'n/a'."""
    if math.isinf(value):
        return "n/a"
    if abs(value) < 100 and value != int(value):
        return f"{value:,.1f}" if abs(value) >= 1 else f"{value:.2g}"
    return f"{value:,.0f}"


def _money(value: float) -> str:
    return f"${value:,.2f}" if value < 100 else f"${value:,.0f}"


def as_dict(capacity: Capacity, costs: Costs, prices: Prices) -> dict[str, Any]:
    units = capacity.units
    return {
        "workload": dataclasses.asdict(capacity.workload),
        "traffic": dataclasses.asdict(capacity.traffic),
        "roles": [dataclasses.asdict(role) for role in capacity.roles],
        "connections_per_gateway": capacity.connections_per_gateway,
        "largest_fanout_seconds": capacity.largest_fanout_seconds,
        "gateway_loss_resume_seconds": (
            None if math.isinf(capacity.gateway_loss_resume_seconds) else capacity.gateway_loss_resume_seconds
        ),
        "store": dataclasses.asdict(capacity.store),
        "broker": dataclasses.asdict(capacity.broker),
        "bandwidth": dataclasses.asdict(capacity.bandwidth),
        "prices": dataclasses.asdict(prices),
        "costs_per_month": dataclasses.asdict(costs),
        "units": {
            f.name: {"value": getattr(units, f.name), "source": units.source(f.name)}
            for f in dataclasses.fields(Units)
            if f.name != "sources"
        },
    }


def as_json(capacity: Capacity, costs: Costs, prices: Prices) -> str:
    return json.dumps(as_dict(capacity, costs, prices), indent=2, sort_keys=False)


def _section(title: str, rows: list[tuple[str, str]]) -> list[str]:
    width = max(len(label) for label, _ in rows)
    return [title, *(f"  {label.ljust(width)}  {value}" for label, value in rows), ""]


def as_table(capacity: Capacity, costs: Costs) -> str:
    w, t, s, b, bw = capacity.workload, capacity.traffic, capacity.store, capacity.broker, capacity.bandwidth
    lines = [f"tidings plan: {w.name} ({_n(w.daily_users)} daily users)", ""]
    lines += _section(
        "Traffic",
        [
            ("events/day (direct + posts)", _n(t.events_per_day)),
            ("events/s average / peak", f"{_n(t.events_per_day / DAY)} / {_n(t.peak_events_per_second)}"),
            ("mean recipients / followers", f"{_n(t.mean_recipients)} / {_n(t.mean_followers)}"),
            ("inbox rows/day", _n(t.rows_per_day)),
            (
                "inbox rows/s average / peak",
                f"{_n(t.average_rows_per_second)} / {_n(t.peak_rows_per_second)}",
            ),
            ("rows from chunk-job posts", f"{t.celebrity_rows_share:.0%}"),
            ("connections at the peak", _n(t.peak_connections)),
            ("live frames/s at the peak", _n(t.peak_deliveries_per_second)),
        ],
    )
    role_rows = [
        (
            r.name,
            f"{r.processes} processes ({_n(r.cores)} cores busy, {_n(r.memory_gib)} GiB; by {r.bound_by})",
        )
        for r in capacity.roles
    ]
    processes = sum(r.processes for r in capacity.roles)
    memory = sum(r.memory_gib for r in capacity.roles)
    role_rows.append(("total", f"{processes} processes = {processes} cores, {_n(memory)} GiB"))
    role_rows.append(("connections per gateway", _n(capacity.connections_per_gateway)))
    role_rows.append(
        (f"one post to {_n(t.largest_fanout)}", f"{_n(capacity.largest_fanout_seconds)} s to fan out")
    )
    role_rows.append(
        ("one gateway lost", f"{_n(capacity.gateway_loss_resume_seconds)} s until its clients resume")
    )
    lines += _section("Processes (one core each)", role_rows)
    lines += _section(
        "PostgreSQL",
        [
            ("row writes/s at the peak", _n(s.peak_write_rows_per_second)),
            ("reads/s at the peak", _n(s.peak_reads_per_second)),
            ("cores / primaries", f"{_n(s.cores)} / {s.nodes} (over 1: sharded by user)"),
            ("rows kept", f"{_n(s.rows_kept)} ({w.retention_days} days)"),
            ("size", f"{_n(s.size_gib)} GiB; {_n(s.written_per_year_gib)} GiB written a year"),
            (
                "write MiB/s, IOPS w / r",
                f"{_n(s.peak_write_mib_per_second)}, {_n(s.peak_write_iops)} / {_n(s.peak_read_iops)}",
            ),
        ],
    )
    lines += _section(
        "Broker",
        [
            (
                "log appends/s (with chunk jobs)",
                f"{_n(b.peak_appends_per_second)} ({_n(b.peak_log_mib_per_second)} MiB/s)",
            ),
            (
                "bus messages/s",
                f"{_n(b.peak_bus_messages_per_second)} ({_n(b.peak_bus_mib_per_second)} MiB/s)",
            ),
        ],
    )
    lines += _section(
        "Bandwidth",
        [
            ("egress to clients at the peak", f"{_n(bw.peak_egress_mib_per_second)} MiB/s"),
            ("ingress from producers at the peak", f"{_n(bw.peak_ingress_mib_per_second)} MiB/s"),
            ("egress per month", f"{_n(bw.egress_gib_per_month)} GiB"),
        ],
    )
    lines += _section(
        "Monthly cost (prices: --price, or `prices:` in the workload)",
        [
            ("compute", _money(costs.compute)),
            ("database (primary + standby)", _money(costs.database)),
            ("broker (3 nodes)", _money(costs.broker)),
            ("egress", _money(costs.egress)),
            ("total", _money(costs.total)),
            ("per million notifications", _money(costs.per_million_notifications)),
        ],
    )
    lines.append("Unit costs: tidings plan --json lists each with its source (bench file or assumption).")
    return "\n".join(lines)
