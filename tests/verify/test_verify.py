"""``tidings verify`` against a real ``tidings serve``: it passes on a healthy server, passes across kill -9
and restarts injected by its own ``--kill-cmd`` (every fault followed by an integrity check of the SQLite
file: the power-loss simulation with ``synchronous=FULL``), and fails, naming what was lost, when a fault
truly loses data."""

from __future__ import annotations

import dataclasses
import shlex
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from .support import ShellServer, verify

pytestmark = pytest.mark.e2e

# Deletes the oldest inbox row from the SQLite file behind the running server's back: a fault that truly
# loses an accepted event.
DELETE_ROW = (
    "import sqlite3,sys; db=sqlite3.connect(sys.argv[1], timeout=30); "
    "db.execute('DELETE FROM inbox WHERE rowid = (SELECT min(rowid) FROM inbox)'); db.commit()"
)


@pytest.fixture
async def shell_server(tmp_path: Path) -> AsyncIterator[ShellServer]:
    server = ShellServer(tmp_path / "serve")
    await server.start()
    yield server
    server.kill()
    print(f"--- server log tail ---\n{server.log_tail()}")


async def test_verify_passes_against_a_healthy_server(shell_server: ShellServer) -> None:
    creds = await shell_server.create_app("verify")
    run = await verify(
        shell_server.url,
        creds,
        *("--events", "400", "--users", "6", "--clients", "4", "--timeout", "90", "--seed", "1"),
        env=shell_server.env,
    )
    assert run.code == 0, (run.report, run.stderr)
    report = run.report
    assert report["ok"] is True
    assert report["events"] == 400
    assert (report["lost"], report["duplicated"], report["gaps"], report["out_of_order"]) == (0, 0, 0, 0)
    assert report["resumes"] > 0, "no client dropped and resumed: resume was not exercised"
    assert report["latency_ms"]["count"] > 0


@pytest.mark.parametrize("wrong", ["api_key", "jwt_secret"])
async def test_refused_credentials_end_the_run_at_once_with_exit_2(
    shell_server: ShellServer, wrong: str
) -> None:
    creds = await shell_server.create_app("verify")
    bad = dataclasses.replace(creds, **{wrong: "not-" + getattr(creds, wrong)})
    run = await verify(shell_server.url, bad, "--events", "50", "--timeout", "120", env=shell_server.env)
    assert run.code == 2, (run.report, run.stderr)
    assert ("--api-key" if wrong == "api_key" else "--jwt-secret") in run.stderr
    assert not run.report


async def test_verify_fails_and_names_what_a_fault_lost(shell_server: ShellServer) -> None:
    creds = await shell_server.create_app("verify")
    db = shell_server.data / "tidings.db"
    kill_cmd = f"{shlex.quote(sys.executable)} -c {shlex.quote(DELETE_ROW)} {shlex.quote(str(db))}"
    run = await verify(
        shell_server.url,
        creds,
        *("--events", "600", "--users", "6", "--clients", "2", "--timeout", "90"),
        # Paced (3 s), so the faults fall inside the run however fast the machine is.
        *("--rate", "200", "--kill-cmd", kill_cmd, "--kill-every", "0.3"),
        env=shell_server.env,
    )
    report = run.report
    assert run.code == 1, (report, run.stderr)
    assert report["faults"] >= 1
    assert report["lost"] >= 1
    assert any("accepted, not in the inbox" in line for line in report["examples"]["lost"]), report


@pytest.mark.serial  # kill -9 runs
@pytest.mark.parametrize(
    ("events", "every"),
    [
        pytest.param(600, 3.0, id="short", marks=pytest.mark.timeout(240)),
        pytest.param(20000, 3.0, id="soak", marks=[pytest.mark.slow, pytest.mark.timeout(900)]),
    ],
)
async def test_verify_across_kill_9_and_restart_loses_nothing_and_the_file_stays_sound(
    shell_server: ShellServer, events: int, every: float
) -> None:
    """The power-loss simulation: kill -9 of the whole process group while producers are committing (group
    commit, synchronous=FULL), then PRAGMA integrity_check on the file, then restart; the ledger balances."""
    creds = await shell_server.create_app("verify")
    run = await verify(
        shell_server.url,
        creds,
        *("--events", str(events), "--users", "8", "--clients", "4", "--timeout", "600"),
        # Paced, so the faults fall inside the run however fast the machine is: unpaced, a quiet machine sent
        # the 600 events in under 3 s and the run ended before its first fault.
        *("--rate", str(events / (4 * every))),
        *("--kill-cmd", f"sh {shlex.quote(str(shell_server.crash_script))}", "--kill-every", str(every)),
        env=shell_server.env,
        within=800.0,
    )
    report = run.report
    print(report)
    assert run.code == 0, (report, run.stderr)
    assert report["faults"] >= 1
    assert report["recovery_s"], "nothing was accepted after a fault"
    answers = shell_server.integrity_answers()
    assert len(answers) == report["faults"]
    assert set(answers) == {"ok"}, answers
