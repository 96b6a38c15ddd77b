"""A monthly cost estimate from a price table the user can override.

The shipped prices are round placeholder figures in US dollars, not a quote from any provider: a core-hour of a
general-purpose VM, a GiB-hour of its memory, a managed-database core-hour, a GiB-month of SSD storage, an
hour of one broker node, and a GiB of internet egress. Replace them with your own (``prices:`` in the
workload, or ``--price name=value``). The database is priced twice (a primary and a synchronous standby: a
202 must survive the loss of one machine), the broker as three nodes (a quorum).

Cost per million notifications = the month's total / (inbox rows per month / 1,000,000).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from tidings.errors import ConfigError
from tidings.plan.capacity import MONTH, PROCESS_MEMORY_GIB, Capacity

HOURS = MONTH / 3600.0  # 729.6 hours in a 30.4-day month


@dataclass(frozen=True, slots=True)
class Prices:
    core_hour: float = 0.04
    memory_gib_hour: float = 0.005
    db_core_hour: float = 0.10
    storage_gib_month: float = 0.12
    broker_node_hour: float = 0.10
    egress_gib: float = 0.05
    db_copies: int = 2
    broker_nodes: int = 3

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Prices:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown prices: {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        try:
            values: dict[str, Any] = {
                k: (int(v) if k in ("db_copies", "broker_nodes") else float(v)) for k, v in data.items()
            }
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"prices are numbers: {exc}") from exc
        if any(v < 0 for v in values.values()):
            raise ConfigError("prices are not negative")
        return dataclasses.replace(cls(), **values)


def parse_price_flags(flags: list[str]) -> dict[str, str]:
    """``name=value`` pairs from ``--price``."""
    pairs: dict[str, str] = {}
    for flag in flags:
        name, sep, value = flag.partition("=")
        if not sep:
            raise ConfigError(f"--price {flag!r}: write name=value")
        pairs[name.strip()] = value.strip()
    return pairs


@dataclass(frozen=True, slots=True)
class Costs:
    compute: float  # api, worker and gateway cores and memory
    database: float  # cores and storage, times the copies
    broker: float
    egress: float
    total: float
    rows_per_month: float
    per_million_notifications: float


def monthly(capacity: Capacity, prices: Prices) -> Costs:
    cores = sum(role.processes for role in capacity.roles)
    memory = sum(max(role.memory_gib, role.processes * PROCESS_MEMORY_GIB) for role in capacity.roles)
    compute = cores * prices.core_hour * HOURS + memory * prices.memory_gib_hour * HOURS
    store = capacity.store
    database = prices.db_copies * (
        store.cores * prices.db_core_hour * HOURS + store.size_gib * prices.storage_gib_month
    )
    broker = prices.broker_nodes * prices.broker_node_hour * HOURS
    egress = capacity.bandwidth.egress_gib_per_month * prices.egress_gib
    total = compute + database + broker + egress
    rows = capacity.traffic.rows_per_day * MONTH / 86_400.0
    return Costs(
        compute=compute,
        database=database,
        broker=broker,
        egress=egress,
        total=total,
        rows_per_month=rows,
        per_million_notifications=total / (rows / 1e6) if rows else 0.0,
    )
