"""Half-open HTTP connections (slowloris) against real ``tidings serve``, ``api`` and ``gateway`` processes: a
stopped head, a trickled head and a stalled body are closed at their deadlines, sockets from one address over
the per-IP cap are closed at once, and ``/healthz`` keeps answering a normal client meanwhile.

The processes run with a lowered open-files limit (the issue's repro: with ``ulimit -n 300``, 320 idle sockets
made ``/healthz`` fail for everyone): without the cap, the attack below exhausts it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .harness import TIDINGS, free_port, http_client

pytestmark = pytest.mark.e2e

HEADER_TIMEOUT = 2.0
BODY_TIMEOUT = 2.0
CAP = 40  # sockets per client address
NOFILE = 160  # the child's open-files limit: fewer than the sockets of the attack
ATTACK = 200  # idle sockets from one address (CAP of them held, the rest over the cap)
SLACK = 4.0  # on top of a deadline, for a loaded machine
ATTACKER = "127.0.0.2"  # loopback, but another address than the normal client's 127.0.0.1
SLOW = "127.0.0.3"  # the slow senders: an address of their own, so the cap does not close them first


def _lower_nofile() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, NOFILE))


COMMANDS = ("serve", "api", "gateway")


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A ``tidings <command>`` process per command, started together, with short deadlines and a small cap;
    yields each one's base URL."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
    env |= {
        "TIDINGS_HEADER_TIMEOUT": str(HEADER_TIMEOUT),
        "TIDINGS_BODY_TIMEOUT": str(BODY_TIMEOUT),
        "TIDINGS_MAX_CONNECTIONS_PER_IP": str(CAP),
    }
    procs: dict[str, tuple[subprocess.Popen[bytes], str, Path]] = {}
    try:
        for command in COMMANDS:
            data: Path = tmp_path_factory.mktemp(command)
            port = free_port()
            argv = [str(TIDINGS), command, "--port", str(port), "--data", str(data), "--metrics-port", "-1"]
            log = data.with_name(f"{data.name}.log")
            with log.open("wb") as out:
                proc = subprocess.Popen(
                    argv, stdout=out, stderr=subprocess.STDOUT, env=env, preexec_fn=_lower_nofile
                )
            procs[command] = (proc, f"http://127.0.0.1:{port}", log)
        for command, (proc, base, log) in procs.items():
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and proc.poll() is None:
                with contextlib.suppress(httpx.TransportError):
                    if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                        break
                time.sleep(0.1)
            else:
                raise RuntimeError(f"tidings {command} did not start:\n{log.read_text(errors='replace')}")
        yield {command: base for command, (_, base, _) in procs.items()}
    finally:
        for proc, _, _ in procs.values():
            proc.terminate()
        for proc, _, _ in procs.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def _connect(base: str, source: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, _, port = base.removeprefix("http://").partition(":")
    return await asyncio.open_connection(host, int(port), local_addr=(source, 0))


async def _until_closed(reader: asyncio.StreamReader, within: float) -> bytes | None:
    """What the server sent before it closed the socket, or None if it is still open after ``within``."""
    try:
        return await asyncio.wait_for(reader.read(), within)
    except TimeoutError:
        return None
    except ConnectionError:
        return b""


async def _trickle(writer: asyncio.StreamWriter, reader: asyncio.StreamReader, within: float) -> bool:
    """Sends a header byte every 0.25 s until the server closes the socket (True) or ``within`` passes."""
    deadline = time.monotonic() + within
    writer.write(b"GET /healthz HTTP/1.1\r\n")
    while time.monotonic() < deadline:
        try:
            writer.write(b"X")
            await writer.drain()
            await asyncio.wait_for(reader.read(100), 0.25)
            return True  # EOF, or the 408 that comes with the close
        except TimeoutError:
            continue
        except ConnectionError:
            return True
    return False


@pytest.mark.parametrize("command", COMMANDS)
async def test_half_open_connections_are_closed_and_healthz_keeps_answering(
    servers: dict[str, str], command: str
) -> None:
    server = servers[command]
    # The slow senders: a head that stops, a head trickled a byte at a time, a body that stalls.
    stopped = await _connect(server, SLOW)
    stopped[1].write(b"GET / HTTP/1.1\r\nHost: x\r\n")
    trickled = await _connect(server, SLOW)
    stalled = await _connect(server, SLOW)
    stalled[1].write(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
    trickling = asyncio.create_task(_trickle(trickled[1], trickled[0], HEADER_TIMEOUT + SLACK))
    # The flood: idle sockets from one address, past the cap and past the process's open-files limit.
    held = [await _connect(server, ATTACKER) for _ in range(CAP)]
    over = []
    for _ in range(ATTACK - CAP):
        with contextlib.suppress(ConnectionError):  # a refused connect is refused at once too
            over.append(await _connect(server, ATTACKER))
    async with http_client(server, timeout=5.0) as http:
        healthz = (await http.get("/healthz")).status_code
        # One more from the flooding address with a whole request: closed unanswered, while it holds the cap.
        reader, writer = await _connect(server, ATTACKER)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        refused = await _until_closed(reader, SLACK)
        closed_at_once = [await _until_closed(r, SLACK) for r, _ in over]
        # Every held socket and every slow sender is closed at its deadline.
        held_closed = [await _until_closed(r, HEADER_TIMEOUT + SLACK) for r, _ in held]
        stopped_answer = await _until_closed(stopped[0], HEADER_TIMEOUT + SLACK)
        stalled_answer = await _until_closed(stalled[0], BODY_TIMEOUT + SLACK)
        trickle_closed = await trickling
        healthz_after = (await http.get("/healthz")).status_code
    for _, w in [stopped, trickled, stalled, *held, *over, (reader, writer)]:
        w.close()
    assert healthz == 200, "/healthz failed during the flood"
    assert healthz_after == 200, "/healthz failed after the flood"
    assert refused == b"", f"a socket over the cap was served: {refused!r}"
    assert all(x is not None for x in closed_at_once), "sockets over the per-IP cap stayed open"
    assert all(x is not None for x in held_closed), "idle sockets outlived the header deadline"
    assert stopped_answer is not None, "a stopped head outlived the header deadline"
    assert stopped_answer.startswith(b"HTTP/1.1 408"), stopped_answer
    assert trickle_closed, "a trickled head outlived the header deadline"
    assert stalled_answer is not None, "a stalled body outlived the body deadline"
