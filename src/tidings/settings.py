"""One frozen ``Settings``, built once at the edge from ``TIDINGS_*`` variables; CLI flags mirror them."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

from tidings.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    # The WebSocket server of the gateway role (docs/decisions/0002, 0007): "fastws", the fast listener with
    # coalesced writes, takes /v1/ws upgrades on ``port`` itself (one port for HTTP, SSE and WebSocket);
    # "uvicorn" serves /v1/ws through the ASGI shell (the fallback). ``ws_port`` N > 0 also opens the fast
    # listener on a port of its own (the old two-port layout); 0: none.
    ws_server: str = "fastws"
    ws_port: int = 0
    # Where GET /metrics is served: -1 on the main listener (``tidings serve``, local use); 0 on a listener of
    # its own at ``port + 1000`` (the default of ``tidings api|worker|gateway|sender``: scrapes stay off the
    # public routes); N > 0 on its own listener at port N. A separate listener makes the main one answer 404.
    metrics_port: int = -1
    data: str = "./tidings-data"
    store: str = ""  # sqlite:///path or postgresql://...; empty: sqlite in ``data``
    broker: str = "memory://"  # the live bus (and, on scale-out engines, the event log)
    namespace: str = "tidings"  # prefix of every stream, queue, subject and key on shared engines
    admin_token: str = ""  # empty: the admin routes are off
    # Limits: every one is explicit, and each has a test.
    max_body_bytes: int = 1024 * 1024
    max_frame_bytes: int = 64 * 1024
    max_recipients: int = 1000
    max_batch_events: int = 500
    rate_per_key: float = 2000.0  # events per second per API key (token bucket)
    rate_burst: float = 4000.0
    # "" : a token bucket per process; redis://host:port/db : one moving window per key shared by every replica
    rate_limit_storage: str = ""
    auth_timeout: float = 10.0
    # Half-open connections (slowloris), on every HTTP listener (gateway/front.py): a request head must arrive
    # within header_timeout seconds (from the connection's opening, or a keep-alive request's first byte; 408
    # then), its body within body_timeout of the head (the socket is closed then). At most
    # max_connections_per_ip sockets per client address in the HTTP stage (0: no cap; behind a proxy every
    # connection has the proxy's address: cap at the proxy instead, as deploy/haproxy.cfg does).
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    max_connections_per_ip: int = 256
    outbox_max_frames: int = 1000
    outbox_max_bytes: int = 1024 * 1024
    backlog_page: int = 500
    heartbeat_interval: float = 15.0
    # Live connections after ``ready`` (docs/protocol.md "Token lifetime" and "Client frame limits"):
    token_grace: float = 30.0  # seconds after a token's exp to re-auth in-band before the close (1008)
    ws_client_rate: float = 10.0  # client frames per second a WebSocket connection may send, sustained
    ws_client_burst: float = 30.0  # ... and at once; one frame more is a flood: close 1008 rate_limited
    # A connection's timer sleeps until its token's next due time, waking at least this often to read the clock
    # again (a clock stepped by NTP; tests on a fake clock set it short). One wake-up per connection per period.
    token_check_interval: float = 60.0
    ticket_ttl: float = 60.0
    drain_timeout: float = 10.0
    worker_batch: int = 256
    # Inbox write chunks (of up to 1,000 rows) between two full cyclic garbage collections in the worker (0: the
    # interpreter's thresholds only). Bounds its memory to about that many chunks' rows: docs/performance.md.
    worker_gc_chunks: int = 1
    ack_wait: float = 30.0  # broker logs: an unacked delivery is handed out again after this many seconds
    # Order by key on the broker logs (docs/scaling.md "Order by key"): each lane is split into this many
    # partitions by ``core.ordering.event_partition``; one worker at a time consumes a partition, under a lease
    # renewed every ``log_lease / 3`` seconds. Every process of a deployment must use the same count.
    log_partitions: int = 16
    log_lease: float = 10.0  # seconds a dead worker's partitions wait before another worker takes them
    sqlite_synchronous: str = "FULL"  # FULL: a 202 survives power loss, not just a process crash
    # A PostgreSQL store's connection pool per process: pg_pool_size kept open, up to pg_pool_overflow more under
    # load, and a store call that finds them all busy for pg_pool_timeout seconds fails as unavailable (HTTP 503
    # + Retry-After; a live stream ends with ``unavailable`` and the client resumes). A gateway taking a reconnect
    # storm reads each resuming client's backlog on its own connection: docs/reliability.md.
    pg_pool_size: int = 5
    pg_pool_overflow: int = 5
    pg_pool_timeout: float = 10.0
    demo: bool = False
    # Social rules (fan-out at scale, overload shedding, the decision log):
    fanout_chunk: int = 1000  # recipients per inbox transaction, and subscribers per topic chunk job
    fanout_split: int = 100  # chunk jobs one split job appends (then the next split job takes over)
    max_bulk_subscribers: int = 10_000  # user ids per PUT /v1/topics/{topic}/subscribers
    shed_low_lag: int = 50_000  # log lag over which low-priority events are refused (503 + Retry-After)
    shed_normal_lag: int = 200_000  # ... and normal-priority ones; high priority is never shed
    decision_retention: float = 7 * 86400.0  # seconds the decision log keeps a decision
    # Offline senders (``tidings sender``, and inside ``tidings serve``); a channel without its settings is off:
    production: bool = False  # on: push endpoints and webhook URLs must be https
    public_url: str = ""  # where users reach this API (the one-click unsubscribe links in mails)
    smtp_url: str = ""  # smtp://user:pass@host:port or smtps://...; empty: email is off
    email_from: str = ""  # the From of mails, e.g. "Tidings <notify@example.org>"
    egress_allow: str = ""  # CIDRs webhooks and push endpoints may reach despite the SSRF guard
    vapid_subject: str = ""  # the VAPID contact (mailto: or https:); empty: mailto:tidings@<public host>
    fcm_credentials: str = ""  # path of a service-account JSON key; empty: mobile push is off
    fcm_api_base: str = ""  # overrides https://fcm.googleapis.com (tests)
    fcm_token_uri: str = ""  # overrides the key's token_uri (tests)
    fcm_ca_file: str = ""  # a CA bundle to trust for the FCM and token endpoints (tests)
    webhook_retry_schedule: str = "5,30,120,600,1800,3600,7200,14400"  # seconds between webhook attempts
    # A claim's sends run in one wave (batch <= concurrency) bounded by the channels' deadlines (30 s at most), so
    # a live sender finishes its batch within its lease; a dead sender's deliveries are taken again after it.
    sender_batch: int = 32  # deliveries per claim
    sender_concurrency: int = 32  # sends in flight per sender process
    sender_lease: float = 60.0  # seconds a claim holds its deliveries
    sender_poll: float = 1.0  # seconds between claims when nothing is due
    sender_retry_base: float = 5.0  # full-jitter backoff of push, email and (without a schedule) webhooks
    sender_retry_cap: float = 3600.0
    sender_max_attempts: int = 8
    # Retention (``core.retention``, swept by ``sweeper.py`` in every worker process); apps override the limits
    # in their rules (``/v1/rules``). 0: no limit.
    retention_max_age: float = 0.0  # seconds a notification is kept in a user inbox
    retention_max_count: int = 0  # notifications kept per user inbox
    retention_batch: int = 2000  # rows deleted per sweep transaction at most
    retention_users: int = 500  # users looked at per sweep transaction
    retention_pause: float = 0.05  # seconds between two sweep transactions (writers go first)
    retention_interval: float = 300.0  # seconds between two passes over every inbox
    # Kafka (``--broker kafka://``): partitions per lane topic (the most fan-out workers that can share a lane),
    # and the replication factor of the topics created at start-up (3 on a production cluster).
    kafka_partitions: int = 12
    kafka_replication: int = 1

    @property
    def metrics_listen_port(self) -> int | None:
        """The port of the separate metrics listener, or None when /metrics is on the main listener."""
        if self.metrics_port < 0:
            return None
        return self.metrics_port or self.port + 1000

    @property
    def store_url(self) -> str:
        return self.store or f"sqlite:///{Path(self.data).resolve() / 'tidings.db'}"

    def replace(self, **changes: object) -> Settings:
        kept = {k: v for k, v in changes.items() if v is not None}
        return dataclasses.replace(self, **kept)  # type: ignore[arg-type]

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Defaults, then ``TIDINGS_<FIELD>`` variables, then ``overrides`` (CLI flags) that are not None.

        ``TIDINGS_<FIELD>_FILE`` names a file holding the value (Docker and Kubernetes secrets), used when
        ``TIDINGS_<FIELD>`` itself is unset.
        """
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = _value(env, f"TIDINGS_{f.name.upper()}")
            if raw is not None:
                values[f.name] = _parse(f.name, str(f.type), raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls(**values)  # type: ignore[arg-type]
        except TypeError as exc:
            raise ConfigError(str(exc)) from exc


def _value(env: Mapping[str, str], name: str) -> str | None:
    if name in env:
        return env[name]
    path = env.get(f"{name}_FILE")
    if path is None:
        return None
    try:
        return Path(path).read_text().strip()
    except OSError as exc:
        raise ConfigError(f"{name}_FILE={path!r} cannot be read: {exc.strerror}") from exc


def _parse(name: str, kind: str, raw: str) -> object:
    try:
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind == "bool":
            return raw.strip().lower() in ("1", "true", "yes", "on")
    except ValueError as exc:
        raise ConfigError(f"TIDINGS_{name.upper()}={raw!r} is not a valid {kind}") from exc
    return raw
