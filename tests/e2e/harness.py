"""A real ``tidings serve`` process for end-to-end tests, and the small tools around it.

``ServerProcess`` starts the server in its own process group (so a signal reaches it and its children, and
nothing else), waits for ``GET /readyz``, and can stop it (SIGTERM), kill it (SIGKILL) and start it again on
the same data directory and port. Its output goes to a log file beside the data directory, whose tail is
printed when a test fails. Its settings are exactly the ``env`` a test gives (``TIDINGS_*`` variables of the
runner's own environment are not passed on), on the embedded backends: SQLite in the data directory.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
import jwt

# The command under test: the virtualenv's ``tidings`` unless E2E_TIDINGS names another build of it.
TIDINGS = Path(os.environ.get("E2E_TIDINGS") or Path(sys.executable).parent / "tidings")
AUDIENCE = "tidings"


def free_port() -> int:
    """A TCP port that was free a moment ago (the kernel picks it; another process may race us, rarely)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


METRICS_OFFSET = 1000  # a role process's metrics listener: --port + 1000 (the role commands' default)


def role_port(taken: set[int]) -> int:
    """A port P for a role process such that P and P + 1000 (its metrics listener) are both free now and
    neither is in ``taken`` (the ports and metrics ports handed out before); adds both to ``taken``.

    Ports the kernel hands out one after another can lie exactly 1000 apart: a replica's metrics listener then
    takes another replica's port (seen once in CI)."""
    for _ in range(200):  # bounded: almost every draw fits at once
        port = free_port()
        pair = {port, port + METRICS_OFFSET}
        if port + METRICS_OFFSET > 65535 or pair & taken or not _bindable(port + METRICS_OFFSET):
            continue
        taken |= pair
        return port
    raise RuntimeError("no free port pair (P, P + 1000) in 200 draws")


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def http_client(base_url: str, *, token: str | None = None, timeout: float = 10.0) -> httpx.AsyncClient:
    """An httpx client for the server under test: no proxies from the environment, optional bearer token."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(base_url=base_url, headers=headers, timeout=timeout, trust_env=False)


async def wait_until(predicate: Callable[[], bool], within: float, *, interval: float = 0.05) -> bool:
    """Polls ``predicate`` until it holds or ``within`` seconds pass; returns whether it held."""
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(interval)
    return True


@dataclass(frozen=True)
class AppCredentials:
    """What ``tidings apps create`` prints."""

    app: str
    api_key: str
    jwt_secret: str

    def token(self, user: str, *, ttl: float = 3600.0, **claims: object) -> str:
        """A user JWT as the app's backend would mint it (HS256, iss/sub/aud/exp)."""
        payload: dict[str, object] = {
            "iss": self.app,
            "sub": user,
            "aud": AUDIENCE,
            "exp": int(time.time() + ttl),
        }
        payload.update(claims)
        return jwt.encode(payload, self.jwt_secret, algorithm="HS256")


def unsigned_token(app: str, user: str) -> str:
    """An ``alg: none`` JWT: the classic forgery that a verifier must refuse."""

    def part(obj: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    claims = {"iss": app, "sub": user, "aud": AUDIENCE, "exp": int(time.time() + 3600)}
    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


class ServerProcess:
    """One ``tidings serve`` process on a fixed port and data directory, restartable on both."""

    def __init__(
        self, data_dir: Path, *, env: Mapping[str, object] | None = None, port: int | None = None
    ) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
        self.env["PYTHONUNBUFFERED"] = "1"
        self.env.update({f"TIDINGS_{k.upper()}": str(v) for k, v in (env or {}).items()})
        self.starts = 0
        self.logs: list[Path] = []
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        # One port for HTTP, SSE and WebSocket (docs/decisions/0007); TIDINGS_WS_PORT=N adds a listener of its own.
        own = int(self.env.get("TIDINGS_WS_PORT") or 0)
        return f"ws://127.0.0.1:{own or self.port}/v1/ws"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    async def start(self, ready_timeout: float = 30.0) -> None:
        """Starts the process and returns once ``/readyz`` answers 200."""
        assert not self.running, "already running"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # Beside the data directory, not in it: the server owns what is inside.
        log = self.data_dir.with_name(f"{self.data_dir.name}-server-{self.starts}.log")
        self.logs.append(log)
        self.starts += 1
        argv = [
            str(TIDINGS),
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--data",
            str(self.data_dir),
        ]
        with log.open("wb") as out:
            # A session of its own: signals go to this process group only, never to the test runner.
            # Popen returns at once (the child runs on its own); readiness is polled without blocking.
            self._proc = subprocess.Popen(  # noqa: ASYNC220
                argv, stdout=out, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
            )
        await self._wait_ready(ready_timeout)

    async def _wait_ready(self, within: float) -> None:
        deadline = time.monotonic() + within
        async with http_client(self.base_url, timeout=1.0) as http:
            while time.monotonic() < deadline:
                if not self.running:
                    raise RuntimeError(f"tidings serve exited with {self.returncode}:\n{self.log_tail()}")
                try:
                    if (await http.get("/readyz")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass  # not listening yet
                await asyncio.sleep(0.05)
        raise RuntimeError(f"tidings serve not ready after {within} s:\n{self.log_tail()}")

    @property
    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    async def stop(self, within: float = 30.0) -> int:
        """SIGTERM (graceful drain); returns the exit code. Kills it and raises if it outlives ``within``."""
        self._signal(signal.SIGTERM)
        code = await self.wait_exit(within)
        if code is None:
            await self.kill()
            raise AssertionError(f"tidings serve ignored SIGTERM for {within} s:\n{self.log_tail()}")
        return code

    async def kill(self) -> None:
        """SIGKILL, as a crash: no drain, no cleanup."""
        self._signal(signal.SIGKILL)
        await self.wait_exit(30.0)

    async def restart(self, ready_timeout: float = 30.0) -> None:
        """Starts again on the same data directory and port (the process must have exited)."""
        await self.start(ready_timeout)

    def _signal(self, sig: signal.Signals) -> None:
        if self.running:
            assert self._proc is not None
            os.killpg(self._proc.pid, sig)  # the group we created in start()

    async def wait_exit(self, within: float) -> int | None:
        """The exit code once the process has exited, or None after ``within`` seconds."""
        await wait_until(lambda: not self.running, within, interval=0.02)
        return self.returncode

    def log_tail(self, lines: int = 60) -> str:
        if not self.logs or not self.logs[-1].exists():
            return "(no log)"
        text = self.logs[-1].read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def inbox_rows(self) -> int:
        """Inbox rows in the SQLite file, read while the server is down (after a kill, before the restart)."""
        assert not self.running, "read the database file only while no server holds it"
        with contextlib.closing(sqlite3.connect(self.data_dir / "tidings.db")) as db:
            rows: int = db.execute("SELECT count(*) FROM inbox").fetchone()[0]
            return rows

    async def metric(self, name: str) -> float:
        """One unlabelled sample from ``GET /metrics`` (0 when absent)."""
        async with http_client(self.base_url) as http:
            text = (await http.get("/metrics")).text
        samples = [line.split()[-1] for line in text.splitlines() if line.startswith(f"{name} ")]
        return float(samples[0]) if samples else 0.0

    async def cli(self, *args: str) -> str:
        """Runs ``tidings ARGS --data DIR`` (works whether or not the server runs); returns its stdout."""
        argv = [str(TIDINGS), *args, "--data", str(self.data_dir)]
        done = await asyncio.to_thread(
            subprocess.run, argv, capture_output=True, env=self.env, timeout=60, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"{' '.join(args)} failed ({done.returncode}): {done.stderr.decode(errors='replace')}"
            )
        return done.stdout.decode()

    async def create_app(self, name: str, origins: tuple[str, ...] = ()) -> AppCredentials:
        """``tidings apps create NAME [--origin URL ...]``."""
        flags = [arg for origin in origins for arg in ("--origin", origin)]
        obj = json.loads(await self.cli("apps", "create", name, *flags))
        return AppCredentials(app=obj["app"], api_key=obj["api_key"], jwt_secret=obj["jwt_secret"])
