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
    # The WebSocket server of the gateway role (docs/decisions/0002): "fastws" listens on ``ws_port`` (0: the
    # next port after ``port``) with coalesced writes; "uvicorn" keeps /v1/ws on the API port (ASGI shell).
    ws_server: str = "uvicorn"  # "fastws" once the single-port hand-off (0002) exists; opt in meanwhile
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
    auth_timeout: float = 10.0
    outbox_max_frames: int = 1000
    outbox_max_bytes: int = 1024 * 1024
    backlog_page: int = 500
    heartbeat_interval: float = 15.0
    ticket_ttl: float = 60.0
    drain_timeout: float = 10.0
    worker_batch: int = 256
    ack_wait: float = 30.0  # broker logs: an unacked delivery is handed out again after this many seconds
    sqlite_synchronous: str = "FULL"  # FULL: a 202 survives power loss, not just a process crash
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
