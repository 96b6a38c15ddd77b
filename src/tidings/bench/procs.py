"""Child processes of a benchmark run: started with a JSON-lines control channel, measured through /proc,
and stopped by their own pid only.

A child prints one JSON object per line on stdout (``{"event": ...}``) and reads commands the same way on
stdin. ``Child.cpu_seconds`` and ``Child.rss_bytes`` read ``/proc/<pid>`` so the parent can tell which side of
a run (server or load clients) ran out of CPU.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

import orjson

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def python_child(*args: str) -> list[str]:
    """The command line of a bench role in a fresh interpreter (``python -m tidings.bench ROLE ...``)."""
    return [sys.executable, "-m", "tidings.bench", *args]


class Child:
    """One started process; ``expect`` reads its JSON lines, ``send`` writes a command."""

    def __init__(self, name: str, process: asyncio.subprocess.Process) -> None:
        self.name = name
        self.process = process
        self.pid = process.pid

    @classmethod
    async def start(cls, name: str, argv: Sequence[str], env: dict[str, str] | None = None) -> Child:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=None,  # the child's errors show in the run's output
            env={**os.environ, **(env or {})},
            limit=16 * 1024 * 1024,
        )
        return cls(name, process)

    async def expect(self, event: str, timeout: float = 120.0) -> dict[str, Any]:
        """The next message whose ``event`` is ``event`` (others are skipped); raises on EOF or timeout."""
        assert self.process.stdout is not None
        async with asyncio.timeout(timeout):
            while True:
                line = await self.process.stdout.readline()
                if not line:
                    raise RuntimeError(f"{self.name} exited (code {await self.process.wait()})")
                try:
                    message = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue  # stray output of a library
                if isinstance(message, dict) and message.get("event") == event:
                    return message

    async def send(self, command: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(orjson.dumps(command) + b"\n")
        await self.process.stdin.drain()

    async def call(self, command: dict[str, Any], reply: str, timeout: float = 300.0) -> dict[str, Any]:
        await self.send(command)
        return await self.expect(reply, timeout)

    def cpu_seconds(self) -> float:
        """User + system CPU time of the process so far."""
        return cpu_seconds(self.pid)

    def rss_bytes(self) -> int:
        return rss_bytes(self.pid)

    async def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout``: only this child, by its pid."""
        if self.process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.process.wait(), timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            await self.process.wait()


def cpu_seconds(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime (fields 14 and 15)


def pids_named(name: str) -> list[int]:
    """Processes whose command name is ``name`` (read from /proc; for measuring, never for signalling)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm") as f:
                    if f.read().strip() == name:
                        found.append(int(entry))
            except OSError:
                continue
    return found


def rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * PAGE
    except OSError:
        return 0


def emit(event: str, **fields: Any) -> None:
    """A child's message to its parent (one JSON line on stdout)."""
    sys.stdout.buffer.write(orjson.dumps({"event": event, **fields}) + b"\n")
    sys.stdout.buffer.flush()


async def commands() -> Any:
    """The parent's commands, one JSON object per stdin line, until stdin closes."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=16 * 1024 * 1024)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        yield orjson.loads(line)
