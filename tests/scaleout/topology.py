"""The scaled-out topology as local processes: haproxy in front of 2 ``tidings api`` and 2 ``tidings gateway``
replicas, and 2 ``tidings worker`` replicas, all on the shared PostgreSQL (a schema of the test's own, named by
its namespace) and on one broker server that the test started itself.

The haproxy config is this module's own, not ``deploy/haproxy.cfg`` (``tests/deploy`` runs that one): the same
routing (``/v1/ws`` and ``/v1/stream`` to the gateways, everything else to the API), the same health checks on
``/readyz``, the same retry of failed connects on another replica and the same JSON 503 when no replica is ready,
but loopback addresses, faster checks (a killed replica leaves the rotation within about a second) and a log
line per request that the test reads back (status, backend, server, method, path).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import sys
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from e2e.harness import role_port

from .processes import Child, Children

POSTGRES = os.environ.get("TIDINGS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
# The command under test: the virtualenv's ``tidings`` (beside the Python running the tests).
TIDINGS = Path(sys.executable).parent / "tidings"
HAPROXY = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/usr/local/sbin")
READY_WITHIN = 45.0  # seconds a replica may take to start on a busy 2-core machine (imports, migrations)
REPLICAS = {"api": 2, "gateway": 2, "worker": 2}

# A killed worker's deliveries are handed to another one after this long (default 30 s): the run waits for
# them, so a short lease keeps it short. Leases are renewed every ack_wait / 3 while a batch is in hand.
ACK_WAIT = 5.0
# The settings every replica gets (TIDINGS_<NAME>); the rest are the defaults a deployment starts from.
REPLICA_SETTINGS: dict[str, object] = {
    "ack_wait": ACK_WAIT,
    # A killed worker's partitions go to another worker once its leases ran out: as short as ack_wait.
    "log_lease": ACK_WAIT,
    # Teardown drains every replica; nothing is in flight by then.
    "drain_timeout": 3,
}


def replica_env(namespace: str, **settings: object) -> dict[str, str]:
    """This environment without its TIDINGS_* variables, plus the namespace and ``REPLICA_SETTINGS``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
    values = {"namespace": namespace, **REPLICA_SETTINGS, **settings}
    env.update({f"TIDINGS_{name.upper()}": str(value) for name, value in values.items()})
    return env | {"PYTHONUNBUFFERED": "1"}


def replica_argv(role: str, port: int, broker_url: str) -> list[str]:
    return [
        str(TIDINGS),
        role,
        "--store",
        POSTGRES,
        "--broker",
        broker_url,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]


def haproxy_config(public: int, backends: Mapping[str, list[int]]) -> str:
    """haproxy in front of the replicas on ``backends['api']`` and ``backends['gateway']``."""
    servers = {
        role: "\n".join(f"    server {role}{i} 127.0.0.1:{port}" for i, port in enumerate(ports))
        for role, ports in backends.items()
    }
    unavailable = (
        '{\\"error\\":{\\"code\\":\\"unavailable\\",\\"message\\":\\"no replica is ready; retry\\"}}'
    )
    return f"""\
global
    log stdout format raw local0 info
    maxconn 4000

defaults
    mode http
    log global
    option dontlognull
    # One line per request: status, backend/server, method, path (no query: it may hold a stream ticket), and
    # the termination state (its first letter says who ended the session: C client, S server, - normal end).
    log-format "%ST %b/%s %HM %HPO %tsc"
    timeout connect 2s
    timeout http-request 10s
    timeout http-keep-alive 10s
    timeout queue 10s
    timeout client 75s
    timeout server 30s
    # Only failed connects are retried, on another replica: a request that reached a replica may have had an
    # effect; the producer's Idempotency-Key makes its own retry safe.
    retries 2
    retry-on conn-failure
    option redispatch 1
    http-error status 503 content-type application/json hdr Retry-After 1 string "{unavailable}"
    default-server check inter 1s fastinter 250ms downinter 500ms fall 2 rise 2

frontend public
    bind 127.0.0.1:{public}
    acl live_path path /v1/ws /v1/stream
    use_backend gateways if live_path
    default_backend api

backend api
    balance roundrobin
    option httpchk
    http-check send meth GET uri /readyz
    http-check expect status 200
{servers["api"]}

backend gateways
    balance leastconn
    option httpchk
    http-check send meth GET uri /readyz
    http-check expect status 200
    timeout server 75s
    timeout tunnel 1h
{servers["gateway"]}
"""


@dataclass
class Topology:
    """The running fleet: ``public`` is haproxy's port; ``ports`` maps each replica to its own port."""

    public: int
    replicas: dict[str, list[Child]]
    ports: dict[str, int]  # replica name -> port
    haproxy: Child
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.public}"

    def port_of(self, replica: Child) -> int:
        return self.ports[replica.name]

    def answers(self) -> list[Answer]:
        """Every request haproxy logged, over every start of it."""
        lines = (
            line
            for log in sorted(self.haproxy.logs.glob("haproxy.*.log"))
            for line in log.read_text(errors="replace").splitlines()
        )
        return [answer for line in lines if (answer := Answer.parse(line)) is not None]


@dataclass(frozen=True)
class Answer:
    """One request as haproxy logged it."""

    status: int  # -1: no answer at all (the client left first)
    backend: str
    server: str  # "<NOSRV>" when no replica was ready
    path: str
    termination: str  # haproxy's termination state, e.g. "----", "SH--" (the server closed before answering)

    @classmethod
    def parse(cls, line: str) -> Answer | None:
        match = re.fullmatch(r"(-1|\d{3}) ([^/ ]+)/(\S+) \S+ (\S+) (\S+)", line.strip())
        if match is None:
            return None  # haproxy's own notices (start-up, servers going up or down)
        status, backend, server, path, termination = match.groups()
        return cls(int(status), backend, server, path, termination)


def statuses(answers: Iterable[Answer]) -> dict[str, int]:
    """``"<status> <backend>"`` -> requests."""
    return dict(sorted(Counter(f"{a.status} {a.backend}" for a in answers).items()))


async def start_topology(children: Children, broker_url: str, namespace: str) -> Topology:
    """Starts every replica (at once: they migrate the schema under an advisory lock), then haproxy once
    every replica is ready, and returns once haproxy routes to both roles."""
    started = time.monotonic()
    env = replica_env(namespace)
    replicas: dict[str, list[Child]] = {}
    ports: dict[str, int] = {}
    taken: set[int] = set()
    for role, count in REPLICAS.items():
        for i in range(count):
            name, port = f"{role}{i}", role_port(taken)
            ports[name] = port
            replicas.setdefault(role, []).append(
                children.spawn(name, replica_argv(role, port, broker_url), env)
            )
    await asyncio.gather(*(until_ready(r, ports[r.name]) for rs in replicas.values() for r in rs))
    public = role_port(taken)  # not one of the replicas' ports or metrics ports
    config = children.logs / "haproxy.cfg"
    backends = {role: [ports[r.name] for r in replicas[role]] for role in ("api", "gateway")}
    config.write_text(haproxy_config(public, backends))
    assert HAPROXY is not None, "haproxy is not installed (the fixtures skip first)"
    haproxy = children.spawn("haproxy", [HAPROXY, "-db", "-f", str(config)], os.environ)
    topology = Topology(public, replicas, ports, haproxy)
    await until_answers(topology.base_url, "/readyz", 200, haproxy)  # an API replica behind it
    await until_answers(topology.base_url, "/v1/stream", 401, haproxy)  # a gateway behind it
    topology.timings["start"] = time.monotonic() - started
    return topology


async def restart(topology: Topology, replica: Child) -> float:
    """Starts a replica again on its port; the seconds until it answers ``/readyz`` with 200."""
    started = time.monotonic()
    replica.start()
    await until_ready(replica, topology.port_of(replica))
    return time.monotonic() - started


async def until_ready(replica: Child, port: int) -> None:
    await until_answers(f"http://127.0.0.1:{port}", "/readyz", 200, replica)


async def until_answers(
    base: str, path: str, status: int, watched: Child, within: float = READY_WITHIN
) -> None:
    """Polls ``GET path`` until it answers ``status``; ``watched`` must keep running meanwhile."""
    deadline = time.monotonic() + within
    async with httpx.AsyncClient(base_url=base, timeout=2.0, trust_env=False) as http:
        while time.monotonic() < deadline:
            assert watched.running, f"{watched.name} exited with {watched.returncode}:\n{watched.tail()}"
            try:
                if (await http.get(path)).status_code == status:
                    return
            except httpx.TransportError:
                pass  # not listening yet
            await asyncio.sleep(0.1)
    raise AssertionError(f"{base}{path} did not answer {status} within {within} s:\n{watched.tail()}")


async def metric(port: int, name: str) -> float:
    """``name`` summed over its label sets, from the ``/metrics`` of the replica on ``port`` (its metrics
    listener: ``--port + 1000``, the role commands' default)."""
    async with httpx.AsyncClient(timeout=5.0, trust_env=False) as http:
        text = (await http.get(f"http://127.0.0.1:{port + 1000}/metrics")).text
    pattern = rf"^{re.escape(name)}(?:\{{[^}}]*\}})? (\S+)$"
    return sum(float(value) for value in re.findall(pattern, text, re.M))
