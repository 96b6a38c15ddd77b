"""A real ``tidings serve`` as a child process on a free port, started and stopped
without blocking the event loop (a test may serve a receiver in the same loop)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections.abc import Mapping
from pathlib import Path

import httpx

TIDINGS = Path(sys.executable).parent / "tidings"
ADMIN_TOKEN = "observability-server-admin-token"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Server:
    """``tidings serve`` on 127.0.0.1, with an admin token (so /v1/apps and /admin/api work)."""

    def __init__(self, data: Path, *, env: Mapping[str, str] | None = None) -> None:
        self.data, self.port = data, free_port()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        self.env.update({"PYTHONUNBUFFERED": "1", "TIDINGS_ADMIN_TOKEN": ADMIN_TOKEN, **(env or {})})
        self.log = data.with_name(f"{data.name}-server.log")
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, within: float = 30.0) -> Server:
        self.data.mkdir(parents=True, exist_ok=True)
        argv = [
            str(TIDINGS),
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--data",
            str(self.data),
        ]
        with self.log.open("wb") as out:
            self.proc = await asyncio.create_subprocess_exec(
                *argv, stdout=out, stderr=asyncio.subprocess.STDOUT, env=self.env, start_new_session=True
            )
        await self._ready(within)
        return self

    async def _ready(self, within: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        async with httpx.AsyncClient(base_url=self.base_url, timeout=1.0, trust_env=False) as http:
            while loop.time() < deadline:  # bounded by the deadline
                assert self.proc is not None
                if self.proc.returncode is not None:
                    raise RuntimeError(f"the server exited with {self.proc.returncode}:\n{self.tail()}")
                try:
                    if (await http.get("/readyz")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass  # not listening yet
                await asyncio.sleep(0.05)
        raise RuntimeError(f"the server was not ready in {within} s:\n{self.tail()}")

    async def stop(self) -> int | None:
        """SIGTERM (the graceful drain), SIGKILL after 15 s; returns the exit code."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.returncode is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
        return proc.returncode

    def tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    async def create_app(self, name: str) -> dict[str, str]:
        async with httpx.AsyncClient(base_url=self.base_url, timeout=10.0, trust_env=False) as http:
            answer = await http.post(
                "/v1/apps",
                json={"name": name, "origins": []},
                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            )
        answer.raise_for_status()
        created: dict[str, str] = answer.json()
        return created
