""" "202 means durable": an append that returned survives the process being killed at any moment."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
from pathlib import Path

from backend_support import LogHarness

CHILD = Path(__file__).with_name("log_crash_child.py")


def append_until_killed(url: str, prefix: str, kill_after: int) -> list[str]:
    """Runs the child until it reported ``kill_after`` appends, SIGKILLs it, returns every id it printed."""
    child = subprocess.Popen(
        [sys.executable, str(CHILD), url, prefix], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    printed: list[str] = []
    try:
        while len(printed) < kill_after:  # bounded: readline returns "" once the child is gone
            line = child.stdout.readline()
            if not line:
                break
            printed.append(line.strip())
    finally:
        child.send_signal(signal.SIGKILL)
        rest, errors = child.communicate(timeout=30)
    assert len(printed) >= kill_after, f"the child stopped early: {errors}"
    complete = rest.split("\n")[:-1]  # a line cut by the kill was never fully reported
    return printed + complete


async def test_every_reported_append_is_in_the_log_after_sigkill(sqlite_logs: LogHarness) -> None:
    """Kill the appending process at random points, twice: each id it reported is in the log afterwards."""
    rng = random.Random(20261125)
    url = sqlite_logs.settings.store_url
    reported: list[str] = []
    for round_ in range(2):
        reported += append_until_killed(url, f"r{round_}", kill_after=rng.randint(50, 600))
        log = await sqlite_logs.restart()
        logged: list[str] = []
        for _ in range(1000):  # bounded drain
            batch = await log.read(1000, 0.05)
            if not batch:
                break
            logged += [d.event.id for d in batch]
        assert len(logged) == len(set(logged))
        assert set(reported) <= set(logged)
