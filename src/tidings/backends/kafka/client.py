"""What the Kafka log and bus share: the URL, the client options, topic creation, error translation.

``kafka://host:port[,host:port...]`` names the bootstrap servers (``kafkas://`` is accepted as an alias but TLS is
not configured here: terminate it in front, or extend ``client_options``). The namespace prefixes every topic
and group, like the stream and queue names of the other engines.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from urllib.parse import urlsplit

import structlog
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from tidings.errors import ConfigError, UnavailableError
from tidings.settings import Settings

log = structlog.get_logger("tidings.kafka")

REQUEST_TIMEOUT_MS = 10_000
MIN_SESSION_MS = 1000
# Seconds at least without asking for records before a member leaves the group ("Stalled members" in log.py).
STALLED_AFTER = 10.0


def bootstrap_servers(url: str) -> str:
    """``kafka://a:9092,b:9092`` -> ``a:9092,b:9092``; a host without a port gets 9092."""
    parts = urlsplit(url)
    if parts.scheme.split("+", 1)[0].lower() not in ("kafka", "kafkas"):
        raise ConfigError(f"not a kafka:// URL: {url!r}")
    hosts = [h.strip() for h in parts.netloc.rsplit("@", 1)[-1].split(",") if h.strip()]
    if not hosts:
        raise ConfigError(f"kafka:// URL without a host: {url!r}")
    return ",".join(h if ":" in h.rsplit("]", 1)[-1] else f"{h}:9092" for h in hosts)


@contextlib.contextmanager
def translated(what: str) -> Iterator[None]:
    """Kafka and socket errors become ``UnavailableError`` (the class name only: no keys or data)."""
    try:
        yield
    except (KafkaError, OSError, TimeoutError) as exc:
        raise UnavailableError(f"kafka: {what} failed ({type(exc).__name__})") from exc


async def ensure_topics(
    servers: str, topics: dict[str, int], replication: int = 1, configs: dict[str, str] | None = None
) -> None:
    """Creates the ``topics`` (name -> partitions) that do not exist yet; idempotent, and safe when several
    processes start at once (a topic created meanwhile by another is fine). An existing topic keeps its
    partition count: every process reads the real count from the metadata, so they all agree on where a key
    lands (growing a topic moves keys: that is an operator's migration, not a start-up side effect)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=servers, request_timeout_ms=REQUEST_TIMEOUT_MS)
    with translated("open"):
        await admin.start()
    try:
        with translated("create topics"):
            existing = set(await admin.list_topics())
            wanted = [
                NewTopic(name, n, replication, topic_configs=configs or {})
                for name, n in topics.items()
                if name not in existing
            ]
            if not wanted:
                return
            response = await admin.create_topics(wanted)
        for topic, code, message in _topic_errors(response):
            if code not in (0, TopicAlreadyExistsError.errno):
                raise UnavailableError(f"kafka: creating topic {topic} failed ({code}: {message})")
        log.info("kafka_topics_created", topics=[t.name for t in wanted])
    finally:
        await admin.close()


def _topic_errors(response: object) -> list[tuple[str, int, str | None]]:
    errors = getattr(response, "topic_errors", [])
    return [(str(e[0]), int(e[1]), e[2] if len(e) > 2 else None) for e in errors]


def group_timeouts(settings: Settings) -> dict[str, int]:
    """The consumer group's timers, in ms (see "Membership timers" in ``log.py``).

    Session = ``log_lease``: how long a member may go without a heartbeat before the group takes its
    partitions, the same knob as the leases of the other engines. Not ``ack_wait``: heartbeats run on the
    worker's event loop, so every stall of that loop longer than the session (a long collection, a busy
    machine) evicted a live member and stopped the whole group for a rebalance; with a 1 s session that was
    a rebalance every few seconds under load (docs/scaling.md, "Kafka: rebalances under load"). Rebalance
    timeout: at least the session (members learn of a rebalance from a heartbeat, so a shorter one dropped
    members that had not heard of it yet) and at least ``ack_wait`` (a revoked partition's batch in hand is
    given up to ``ack_wait``/2 to finish)."""
    session_ms = max(MIN_SESSION_MS, round(settings.log_lease * 1000))
    rebalance_ms = max(session_ms, round(settings.ack_wait * 1000))
    return {
        "session_timeout_ms": session_ms,
        "heartbeat_interval_ms": max(100, session_ms // 5),
        "rebalance_timeout_ms": rebalance_ms,
        "max_poll_interval_ms": round(max(STALLED_AFTER, 2 * settings.ack_wait) * 1000),
        "request_timeout_ms": max(REQUEST_TIMEOUT_MS, rebalance_ms + 5000),  # a join may wait that long
    }
