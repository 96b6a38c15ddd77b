"""Power loss on the embedded store: ``kill -9`` of ``tidings serve`` (SQLite, ``synchronous=FULL``, the default)
again and again while producers commit large events through the group commit and the worker writes large
inbox batches; after each kill, before the restart, a copy of the database as the crash left it is checked.

Each copy must pass ``PRAGMA integrity_check`` and hold every event answered 2xx before the kill (in the event
log, or already in an inbox): 202 means committed. The WAL's tail says whether the kill fell inside a commit
(frames of a transaction written without its commit frame); the run reports how many did. At the end the
ledger: every 2xx in each inbox and at each client once, in each producer's order.

The kill is aimed: a thread polls ``/proc/<pid>/task/*/syscall`` and sends SIGKILL the moment a thread of the
server is inside ``pwrite64``, ``write``, ``fdatasync`` or ``fsync`` on ``tidings.db*`` (where it cannot look,
not root, the kill falls at random and the run says so).

``tests/verify/test_verify.py`` runs the same kill and integrity check through ``tidings verify --kill-cmd``;
this one also looks inside the file at each crash.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tidings.settings import Settings

from .harness import ServerProcess, wait_until
from .scenario import Plan, Run
from .wal import DiskState, can_watch, check_copy, committing

pytestmark = [pytest.mark.e2e, pytest.mark.serial]

# Large events (the API caps data at 16 KiB): a worker batch of them spans hundreds of pages, so a commit takes
# long enough for a kill to fall inside it.
SHORT = Plan(events=600, users=12, ws_clients=6, sse_clients=6, padding=12_000, resend_ratio=0.05)
SOAK = Plan(
    events=4000,
    users=30,
    ws_clients=15,
    sse_clients=15,
    padding=12_000,
    resend_ratio=0.05,
    settle_timeout=60.0,
)
WATCH_WITHIN = 10.0  # seconds to wait for a commit in progress before killing anyway
IN_COMMIT = {"write", "pwrite64", "fsync", "fdatasync"}


@dataclass(frozen=True)
class Crash:
    doing: str  # what the server was doing to the file when the kill was sent
    state: DiskState
    downtime: float


def pid_of(server: ServerProcess) -> int:
    """The server's pid, which is also its process group's id (it runs in a session of its own)."""
    assert server._proc is not None
    assert server.running
    return server._proc.pid


def kill_in_commit(pid: int, within: float) -> str:
    """SIGKILL to the server's process group as soon as one of its threads is seen writing or syncing the
    database, or after ``within`` seconds regardless; what it was doing then. (Run in a thread: the producers
    go on meanwhile.)"""
    deadline = time.monotonic() + within
    doing = None
    while doing is None and time.monotonic() < deadline:  # bounded by the deadline
        doing = committing(pid)
    os.killpg(pid, signal.SIGKILL)
    return doing or "not seen in a commit"


async def kill_and_inspect(run: Run, server: ServerProcess, at: float, scratch: Path) -> Crash:
    """Once ``at`` of the events are accepted: kill -9 inside a commit, check a copy of the files, restart."""
    assert await wait_until(lambda: run.accepted >= at * run.plan.events, 120.0), f"{run.accepted} accepted"
    accepted = [a.event_id for p in run.producers for a in p.accepted]  # every 2xx before the kill
    pid = pid_of(server)
    started = time.monotonic()
    doing = await asyncio.to_thread(kill_in_commit, pid, WATCH_WITHIN) if can_watch(pid) else "not watched"
    await server.kill()  # (a SIGKILL again if it still runs; reaps it)
    state = await asyncio.to_thread(check_copy, server.data_dir, scratch, accepted)
    await server.restart()
    return Crash(doing, state, time.monotonic() - started)


@pytest.mark.parametrize(
    ("plan", "kills"),
    [
        pytest.param(SHORT, 3, id="short", marks=[pytest.mark.slow, pytest.mark.timeout(300)]),
        pytest.param(SOAK, 12, id="soak", marks=[pytest.mark.slow, pytest.mark.timeout(900)]),
    ],
)
async def test_kill_9_during_group_commit_leaves_a_sound_file_and_loses_nothing(
    server: ServerProcess, plan: Plan, kills: int, tmp_path: Path
) -> None:
    assert Settings().sqlite_synchronous == "FULL", "the server under test runs with synchronous=FULL"
    watched = can_watch(pid_of(server))
    crashes: list[Crash] = []
    async with Run(server, plan) as run:
        for client in run.clients:
            # Each restart takes 10-30 s on a loaded machine, retried every 0.5 s at most: a dozen of them
            # outlast the clients' default bound of 400 connects (then they would stop resuming).
            client._max_connects = 100 * kills + 400
        producing = asyncio.create_task(run.produce())
        for i in range(kills):
            at = (i + 1) / (kills + 1)
            crashes.append(await kill_and_inspect(run, server, at, tmp_path / "copy"))
        await producing
        problems = await run.check()
    states = [c.state for c in crashes]
    print(
        f"{kills} kills, while: {[c.doing for c in crashes]}; uncommitted WAL frames "
        f"{[s.tail.uncommitted for s in states]}; integrity {[s.integrity for s in states]}; "
        f"downtime {[round(c.downtime, 1) for c in crashes]} s; {run.accepted} events accepted, "
        f"{sum(p.retries for p in run.producers)} producer retries, "
        f"up to {max(c.connects for c in run.clients)} connects per client"
    )
    assert [s.integrity for s in states] == ["ok"] * kills
    lost = [sorted(s.missing)[:5] for s in states if s.missing]
    assert not lost, f"events answered 2xx but not in the file after a kill: {lost}"
    assert not problems, "\n".join(problems[:40])
    if watched:
        inside = [c.doing for c in crashes if c.doing.split()[0] in IN_COMMIT]
        # (A commit is a few ms of each second here: a kill may miss, but not all of them.)
        assert inside, f"no kill fell inside a write or sync of the file: {crashes}"
