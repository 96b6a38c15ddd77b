"""What the product does: users, events, fan-out, connections, retention. The planner's input.

A workload is a mapping (a YAML or JSON file, ``tidings.plan.document``) whose keys are the fields of
``Workload``; every field but ``daily_users`` has a default, so a file names only what differs. Two
distributions are mappings of a count to a share (shares sum to 1):

- ``recipients``: direct events (a like, a comment, a mention) by their number of recipients;
- ``followers``: posts (topic events, fanned out to the author's followers) by the author's follower count.
  The celebrities are the large counts: their posts are few, their rows many.

Invariants (checked by ``Workload.from_mapping``): counts and rates are non-negative, shares lie in [0, 1],
each distribution sums to 1 (within 1e-6), and unknown keys are refused (a typo must not silently plan with a
default).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from tidings.errors import ConfigError
from tidings.settings import Settings

_SETTINGS = Settings()


def _direct() -> dict[int, float]:
    return {1: 0.9, 5: 0.09, 50: 0.01}


def _followers() -> dict[int, float]:
    return {50: 0.99, 10_000: 0.0099, 1_000_000: 0.0001}


def _channels() -> dict[str, float]:
    return {"web_push": 0.3, "email": 0.02}


@dataclass(frozen=True, slots=True)
class Workload:
    daily_users: int
    name: str = "workload"
    # Producer traffic.
    events_per_user_per_day: float = 5.0  # direct events a daily user causes (likes, comments, mentions)
    recipients: dict[int, float] = field(default_factory=_direct)
    posts_per_user_per_day: float = 0.05  # topic events a daily user causes (posts to followers)
    followers: dict[int, float] = field(default_factory=_followers)
    peak_to_average: float = 3.0  # the busiest hour's rate over the day's average
    batch_share: float = 0.5  # share of events producers send through POST /v1/events/batch
    user_requests_per_user_per_day: float = 20.0  # inbox pages, unread counts, read/seen marks
    # Live connections.
    peak_concurrent_share: float = 0.1  # share of daily users connected at the peak
    connections_per_user: float = 1.2  # tabs and devices of one connected user
    reconnects_per_connection_per_hour: float = 2.0  # network changes, deploys, sleeping laptops
    # Storage and channels.
    retention_days: int = 30  # inbox rows are kept this long
    channels: dict[str, float] = field(default_factory=_channels)  # share of rows also sent offline
    # Sizes (bytes).
    notification_bytes: int = 600  # one notification frame on the wire
    event_bytes: int = 1_000  # one event in the log
    row_bytes: int = 700  # one inbox row in PostgreSQL, indexes included
    # Deployment.
    ws_server: str = "fastws"  # "fastws" (ADR 0002) or "uvicorn"
    gateway_memory_gib: float = 1.0  # the gateway's memory limit (deploy/k8s/gateway.yaml)
    target_utilisation: float = 0.6  # plan each process to this share of its core at the peak
    min_replicas: int = 2  # per role: one process lost must not stop a role
    store_cache_miss: float = 0.05  # share of store reads that go to disk
    store_cores_per_node: int = 32  # past this, the store is sharded by user (docs/scaling.md: Citus)
    heartbeat_interval: float = _SETTINGS.heartbeat_interval
    fanout_chunk: int = _SETTINGS.fanout_chunk
    fanout_split: int = _SETTINGS.fanout_split

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], **overrides: Any) -> Workload:
        """Validate and build; ``overrides`` (command-line flags) that are not None win over ``data``."""
        merged = dict(data)
        merged.update({k: v for k, v in overrides.items() if v is not None})
        merged.pop("prices", None)  # read by tidings.plan.costs
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(merged) - set(known))
        if unknown:
            raise ConfigError(f"unknown workload keys: {', '.join(map(str, unknown))}")
        if "daily_users" not in merged:
            raise ConfigError("the workload needs daily_users")
        values = {name: _coerce(name, known[name].type, raw) for name, raw in merged.items()}
        workload = cls(**values)
        workload.check()
        return workload

    def replace(self, **changes: Any) -> Workload:
        return dataclasses.replace(self, **changes)

    def check(self) -> None:
        for name in ("recipients", "followers"):
            shares: dict[int, float] = getattr(self, name)
            if shares and abs(sum(shares.values()) - 1.0) > 1e-6:
                raise ConfigError(f"{name}: the shares sum to {sum(shares.values()):g}, not 1")
            if any(count < 1 or share < 0 for count, share in shares.items()):
                raise ConfigError(f"{name}: counts are at least 1 and shares are not negative")
        for name in ("batch_share", "peak_concurrent_share", "store_cache_miss"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name} is a share between 0 and 1")
        if not 0.0 < self.target_utilisation <= 1.0:
            raise ConfigError("target_utilisation is a share above 0 and at most 1")
        if any(not 0.0 <= share <= 1.0 for share in self.channels.values()):
            raise ConfigError("channels: each share is between 0 and 1")
        if self.ws_server not in ("fastws", "uvicorn"):
            raise ConfigError("ws_server is fastws or uvicorn")
        if (
            min(self.daily_users, self.min_replicas, self.store_cores_per_node) < 1
            or self.peak_to_average < 1
        ):
            raise ConfigError(
                "daily_users, min_replicas, store_cores_per_node and peak_to_average are at least 1"
            )
        numbers = [f.name for f in fields(self) if f.type in ("int", "float")]
        if any(getattr(self, name) < 0 for name in numbers):
            raise ConfigError("counts, rates and sizes are not negative")


def _coerce(name: str, kind: Any, raw: Any) -> Any:
    try:
        if kind == "int":
            return int(_number(raw))
        if kind == "float":
            return float(_number(raw))
        if kind == "str":
            return str(raw)
        if kind == "dict[int, float]":
            return {int(_number(k)): float(_number(v)) for k, v in dict(raw).items()}
        if kind == "dict[str, float]":
            return {str(k): float(_number(v)) for k, v in dict(raw).items()}
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name}: {raw!r} is not a valid {kind}") from exc
    raise ConfigError(f"{name}: unsupported field type {kind}")  # pragma: no cover - a new field's type


def _number(raw: Any) -> float | int:
    if isinstance(raw, bool):
        raise ValueError("a boolean is not a number")
    if isinstance(raw, int | float):
        return raw
    text = str(raw).replace("_", "")
    try:
        return int(text)
    except ValueError:
        return float(text)
