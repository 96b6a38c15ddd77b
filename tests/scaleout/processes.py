"""Child processes of one scale-out test: each named, restartable with the same command, and logged.

A ``Child`` runs in a session (process group) of its own, so a signal reaches it and whatever it forked, and
nothing else. Its output goes to ``<logs>/<name>.<n>.log`` for its n-th start (n from 0), so the log of a
process that was killed survives its restart. ``Children`` stops everything it started when its block ends,
however it ends: SIGTERM to all at once (they drain in parallel), SIGKILL to any still running after a bound.
Only processes started here are ever signalled, by the process group id this module created.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

STOP_WITHIN = (
    15.0  # seconds a SIGTERM'd process may take (drain_timeout is 3 s in these tests) before SIGKILL
)
EXIT_WITHIN = 10.0  # seconds a SIGKILL'd process may take to be reaped


def free_port() -> int:
    """A TCP port that was free a moment ago (the kernel picks it; another process may race us, rarely)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Child:
    """One process, started again with the same command and environment after a kill or a stop."""

    def __init__(self, name: str, argv: Sequence[str], env: Mapping[str, str], logs: Path) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = dict(env)
        self.logs = logs
        self.starts = 0
        self._popen: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"<{self.name} pid={self.pid} starts={self.starts}>"

    @property
    def pid(self) -> int | None:
        return None if self._popen is None else self._popen.pid

    @property
    def running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self._popen is None else self._popen.poll()

    @property
    def log(self) -> Path:
        """The log of the current (or last) start."""
        return self.logs / f"{self.name}.{max(self.starts - 1, 0)}.log"

    def start(self) -> None:
        assert not self.running, f"{self.name} is already running"
        self.starts += 1
        with self.log.open("wb") as out:  # the child keeps its own copy of the descriptor
            self._popen = subprocess.Popen(
                self.argv, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def signal(self, sig: signal.Signals) -> None:
        """Sends ``sig`` to this child's process group, if the child still runs (its group id is then ours)."""
        if self._popen is not None and self._popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._popen.pid, sig)

    async def wait_exit(self, within: float) -> bool:
        """Whether the process exited within ``within`` seconds (polled: Popen.wait would block the loop)."""
        deadline = time.monotonic() + within
        while self.running:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    async def kill(self) -> None:
        """``kill -9``: a crash, with no drain and no goodbye to the broker or the store."""
        self.signal(signal.SIGKILL)
        assert await self.wait_exit(EXIT_WITHIN), f"{self.name} outlived SIGKILL"

    async def stop(self, within: float = STOP_WITHIN) -> bool:
        """SIGTERM, then SIGKILL after ``within`` seconds; whether it stopped on SIGTERM alone."""
        self.signal(signal.SIGTERM)
        if await self.wait_exit(within):
            return True
        await self.kill()
        return False

    def reap(self) -> None:
        """Waits (blocking, bounded) for a signalled process, so no zombie outlives the test."""
        if self._popen is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._popen.wait(timeout=EXIT_WITHIN)

    def tail(self, lines: int = 40) -> str:
        if not self.log.exists():
            return "(no log)"
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


class Children:
    """The processes one test starts; ``spawn`` registers and starts one."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.started: list[Child] = []

    def spawn(self, name: str, argv: Sequence[str], env: Mapping[str, str]) -> Child:
        child = Child(name, argv, env, self.logs)
        self.started.append(child)
        child.start()
        return child

    def exited(self, *, besides: Sequence[Child] = ()) -> list[Child]:
        """Children that are not running although nobody stopped them (``besides``: expected to be down)."""
        return [c for c in self.started if not c.running and c not in besides]

    async def stop_all(self, *, keep: Sequence[Child] = ()) -> None:
        """SIGTERM to every child at once (but those in ``keep``), then SIGKILL to any still running after
        ``STOP_WITHIN``."""
        running = [c for c in self.started if c.running and c not in keep]
        for child in running:
            child.signal(signal.SIGTERM)
        await asyncio.gather(*(c.wait_exit(STOP_WITHIN) for c in running))
        for child in running:
            child.signal(signal.SIGKILL)
            child.reap()

    def kill_remaining(self) -> None:
        """SIGKILL to every child still running, reaped without the event loop (the last resort)."""
        for child in self.started:
            child.signal(signal.SIGKILL)
        for child in self.started:
            child.reap()
