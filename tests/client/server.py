"""A real ``tidings serve`` process for the SDK and browser tests: a free port, a temporary data directory,
an admin token so tests can create apps over the API, and ``--demo`` on request.

It is started and stopped synchronously (``Popen`` plus polling ``/readyz``), so one process can serve a
whole module. Its output goes to a log file beside the data directory; ``log_tail`` shows it on failure.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
import jwt

TIDINGS = Path(sys.executable).parent / "tidings"
ADMIN_TOKEN = "client-tests-admin-token"


def free_port() -> int:
    """A TCP port the kernel just gave out (another process may race us for it, rarely)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class AppKeys:
    """An app's credentials, as ``POST /v1/apps`` answers them."""

    app: str
    api_key: str
    jwt_secret: str

    def token(self, user: str, ttl: float = 600.0) -> str:
        """A user JWT, signed as the app's backend would sign it."""
        claims = {"iss": self.app, "sub": user, "aud": "tidings", "exp": int(time.time() + ttl)}
        return jwt.encode(claims, self.jwt_secret, algorithm="HS256")


class TidingsServer:
    def __init__(
        self, data_dir: Path, *, demo: bool = False, env: Mapping[str, object] | None = None
    ) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.demo = demo
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", "TIDINGS_ADMIN_TOKEN": ADMIN_TOKEN}
        self.env.update({f"TIDINGS_{key.upper()}": str(value) for key, value in (env or {}).items()})
        self.log = data_dir.with_name(f"{data_dir.name}-server.log")
        self._proc: subprocess.Popen[bytes] | None = None
        self._apps = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, within: float = 30.0) -> TidingsServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
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
        if self.demo:
            argv.append("--demo")
        with self.log.open("wb") as out:
            # Its own process group: stop() signals exactly this server and its children.
            self._proc = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
            )
        self._wait_ready(within)
        return self

    def _wait_ready(self, within: float) -> None:
        deadline = time.monotonic() + within
        with httpx.Client(base_url=self.base_url, timeout=1.0, trust_env=False) as http:
            while time.monotonic() < deadline:  # bounded by the deadline
                assert self._proc is not None
                if self._proc.poll() is not None:
                    raise RuntimeError(
                        f"tidings serve exited with {self._proc.returncode}:\n{self.log_tail()}"
                    )
                try:
                    if http.get("/readyz").status_code == 200:
                        return
                except httpx.TransportError:
                    pass  # not listening yet
                time.sleep(0.05)
        raise RuntimeError(f"tidings serve not ready after {within} s:\n{self.log_tail()}")

    def stop(self) -> None:
        """SIGTERM (graceful drain), then SIGKILL if it is still there after 15 s."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)

    def log_tail(self, lines: int = 40) -> str:
        if not self.log.exists():
            return "(no log)"
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def create_app(self, name: str | None = None) -> AppKeys:
        """A new app (tenant) through the admin API; by default a fresh name, so tests never share users."""
        self._apps += 1
        body = {"name": name or f"app{self._apps}-{os.getpid()}", "origins": []}
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        with httpx.Client(base_url=self.base_url, timeout=10.0, trust_env=False) as http:
            response = http.post("/v1/apps", json=body, headers=headers)
        response.raise_for_status()
        created = response.json()
        return AppKeys(created["app"], created["api_key"], created["jwt_secret"])
