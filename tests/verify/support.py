"""A ``tidings serve`` that a shell command can kill -9 and start again, and ``tidings verify`` run as a user
runs it (the real command line, its exit code and its ``--json`` report).

``ShellServer`` writes two scripts beside its data directory: ``start.sh`` starts the server in a session of
its own (its pid, which is also its process group, in ``server.pid``), and ``crash.sh`` kill -9s that group,
runs ``PRAGMA integrity_check`` on the SQLite file (appending the answer to ``integrity.log``: the power-loss
check), starts it again and returns once it is ready (so the next fault falls on a running server).
``crash.sh`` is what the tests hand to ``--kill-cmd``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from e2e.harness import TIDINGS, AppCredentials, free_port

# Polls /readyz for up to 60 s: the fault command returns once the restarted server takes events again.
WAIT_READY = (
    "import sys,time,urllib.request\n"
    "for _ in range(600):\n"
    "    try:\n"
    "        if urllib.request.urlopen(sys.argv[1] + '/readyz', timeout=1).status == 200: break\n"
    "    except OSError: time.sleep(0.1)\n"
)
SQLITE_CHECK = (
    "import sqlite3,sys; db=sqlite3.connect(sys.argv[1], timeout=30); "
    "print(db.execute('PRAGMA integrity_check').fetchone()[0])"
)


@dataclass
class Verified:
    """One ``tidings verify`` run: exit code, parsed ``--json`` report, and stderr."""

    code: int
    report: dict[str, Any]
    stderr: str


async def verify(
    url: str, creds: AppCredentials, *args: str, env: Mapping[str, str] | None = None, within: float = 180.0
) -> Verified:
    argv = [
        str(TIDINGS),
        "verify",
        url,
        f"--app={creds.app}",
        f"--api-key={creds.api_key}",  # (= form: a secret may begin with "-")
        f"--jwt-secret={creds.jwt_secret}",
        "--json",
        *args,
    ]
    done = await asyncio.to_thread(
        subprocess.run, argv, capture_output=True, timeout=within, check=False, env=dict(env or os.environ)
    )
    out = done.stdout.decode(errors="replace").strip()
    try:
        report = json.loads(out.splitlines()[-1]) if out else {}
    except ValueError:
        report = {"unparsed": out}
    return Verified(done.returncode, report, done.stderr.decode(errors="replace"))


class ShellServer:
    """``tidings serve`` on a fixed port and data directory, started and crashed by shell scripts."""

    def __init__(self, root: Path, env: Mapping[str, object] | None = None) -> None:
        self.root = root
        self.data = root / "data"
        self.port = free_port()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
        self.env.update({f"TIDINGS_{k.upper()}": str(v) for k, v in (env or {}).items()})
        self.pid_file = root / "server.pid"
        self.log = root / "server.log"
        self.integrity = root / "integrity.log"
        self.start_script = root / "start.sh"
        self.crash_script = root / "crash.sh"
        root.mkdir(parents=True, exist_ok=True)
        self._write_scripts()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _write_scripts(self) -> None:
        q = shlex.quote
        serve = " ".join(
            q(str(a))
            for a in (TIDINGS, "serve", "--host", "127.0.0.1", "--port", self.port, "--data", self.data)
        )
        self.start_script.write_text(
            "#!/bin/sh\n"
            f"setsid {serve} >> {q(str(self.log))} 2>&1 < /dev/null &\n"
            f"echo $! > {q(str(self.pid_file))}\n"
            f"echo $! >> {q(str(self.pid_file))}s\n"  # every one started, for the teardown
        )
        check = f"{q(sys.executable)} -c {q(SQLITE_CHECK)} {q(str(self.data / 'tidings.db'))}"
        self.crash_script.write_text(
            "#!/bin/sh\n"
            f"pid=$(cat {q(str(self.pid_file))})\n"
            'kill -9 "-$pid"\n'  # (dash's kill takes no --)
            # Until it is gone or a zombie (an orphan's reaper may take its time): at most 10 s.
            'for _ in $(seq 500); do grep -qs "^State:[[:space:]]*[^Z]" "/proc/$pid/status" || break; '
            "sleep 0.02; done\n"
            f"{check} >> {q(str(self.integrity))} 2>&1\n"
            f"sh {q(str(self.start_script))}\n"
            f"exec {q(sys.executable)} -c {q(WAIT_READY)} {q(self.url)}\n"
        )

    async def start(self, within: float = 45.0) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(subprocess.run, ["sh", str(self.start_script)], env=self.env, check=True)
        await self.wait_ready(within)

    async def wait_ready(self, within: float = 45.0) -> None:
        async with httpx.AsyncClient(base_url=self.url, timeout=1.0, trust_env=False) as http:
            for _ in range(int(within / 0.1)):
                with contextlib.suppress(httpx.TransportError):
                    if (await http.get("/readyz")).status_code == 200:
                        return
                await asyncio.sleep(0.1)
        raise RuntimeError(f"tidings serve not ready after {within} s:\n{self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL to the group of every server this one started (teardown)."""
        pids = Path(f"{self.pid_file}s")
        for line in pids.read_text().split() if pids.exists() else []:
            with contextlib.suppress(ProcessLookupError, PermissionError, ValueError):
                os.killpg(int(line), signal.SIGKILL)

    def integrity_answers(self) -> list[str]:
        return self.integrity.read_text().split() if self.integrity.exists() else []

    def log_tail(self, lines: int = 40) -> str:
        if not self.log.exists():
            return "(no log)"
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    async def create_app(self, name: str) -> AppCredentials:
        argv = [str(TIDINGS), "apps", "create", name, "--data", str(self.data)]
        done = await asyncio.to_thread(
            subprocess.run, argv, capture_output=True, env=self.env, timeout=60, check=True
        )
        obj = json.loads(done.stdout)
        return AppCredentials(app=obj["app"], api_key=obj["api_key"], jwt_secret=obj["jwt_secret"])
