"""``tidings apps``: list shows no secrets, rotate-key / rotate-secret print the new credential, delete asks
first; on SQLite and PostgreSQL, and against a running ``tidings serve``, which refuses a key once its grace
is over and a deleted app's key and tokens within its app cache's lifetime (5 s)."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tidings.app_commands import grace

from .test_first_run import Served, _env, _serve

TIDINGS = str(Path(sys.executable).parent / "tidings")
PG_URL = "postgresql://postgres@127.0.0.1:5432/test"


def run(*args: str, env: dict[str, str] | None = None, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [TIDINGS, "apps", *args], capture_output=True, text=True, timeout=60, env=env or _env(), **kw
    )


def ok(*args: str, env: dict[str, str] | None = None) -> Any:
    out = run(*args, env=env, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def listed(*where: str, env: dict[str, str] | None = None) -> list[dict[str, Any]]:
    out = run("list", *where, env=env)
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines()]


def test_grace_takes_durations_and_zero() -> None:
    assert grace("0") == 0.0
    assert grace("90") == 90.0
    assert grace("30m") == 1800.0
    assert grace("7d") == 7 * 86400.0
    out = run("rotate-key", "acme", "--grace", "soon")
    assert out.returncode == 2
    assert "not a grace period" in out.stderr


def check_lifecycle(where: list[str], env: dict[str, str] | None = None) -> None:
    created = ok("create", "acme", "--origin", "https://acme.example", *where, env=env)
    ok("create", "beta", *where, env=env)
    rotated_key = ok("rotate-key", "acme", "--grace", "1h", *where, env=env)
    rotated_secret = ok("rotate-secret", "acme", "--grace", "30m", *where, env=env)
    assert rotated_key["api_key"].startswith("tdk_")
    assert rotated_key["api_key"] != created["api_key"]
    assert rotated_secret["jwt_secret"] != created["jwt_secret"]
    apps = listed(*where, env=env)
    assert [a["app"] for a in apps] == ["acme", "beta"]
    acme, beta = apps
    assert acme["origins"] == ["https://acme.example"]
    assert acme["previous_key_until"] == pytest.approx(time.time() + 3600, abs=60)
    assert acme["previous_secret_until"] == pytest.approx(time.time() + 1800, abs=60)
    assert beta["previous_key_until"] is None
    assert beta["previous_secret_until"] is None
    table = run("list", "--format", "table", *where, env=env).stdout
    assert table.splitlines()[0].split()[:2] == ["NAME", "CREATED"]
    everything = json.dumps(apps) + table
    for secret in (
        created["api_key"],
        created["jwt_secret"],
        rotated_key["api_key"],
        rotated_secret["jwt_secret"],
    ):
        assert secret not in everything
    assert "api_key_hash" not in everything
    refused = run("delete", "acme", *where, env=env, stdin=subprocess.DEVNULL)
    assert refused.returncode == 1
    assert "needs --yes" in refused.stderr
    assert ok("delete", "acme", "--yes", *where, env=env) == {"app": "acme", "deleted": True}
    assert [a["app"] for a in listed(*where, env=env)] == ["beta"]
    gone = run("rotate-key", "acme", *where, env=env)
    assert gone.returncode == 1
    assert "no app named 'acme'" in gone.stderr


def test_apps_lifecycle_on_sqlite(tmp_path: Path) -> None:
    check_lifecycle(["--data", str(tmp_path)])


def test_apps_lifecycle_on_postgres() -> None:
    asyncpg = pytest.importorskip("asyncpg")
    namespace = "cli_apps_" + uuid.uuid4().hex[:12]
    try:
        check_lifecycle(["--store", PG_URL], env=_env(TIDINGS_NAMESPACE=namespace))
    finally:

        async def drop() -> None:
            conn = await asyncpg.connect(PG_URL, timeout=5)
            try:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{namespace}" CASCADE')
            finally:
                await conn.close()

        asyncio.run(drop())


def test_delete_on_a_terminal_asks_for_the_name(tmp_path: Path) -> None:
    where = ["--data", str(tmp_path)]
    ok("create", "acme", *where)
    for typed, deleted in (("acm", False), ("acme", True)):
        leader, follower = pty.openpty()
        try:
            os.write(leader, typed.encode() + b"\n")
            out = run("delete", "acme", *where, stdin=follower)
        finally:
            os.close(follower)
            os.close(leader)
        assert "Type the app's name" in out.stdout + out.stderr
        assert (out.returncode == 0) is deleted, out.stderr
        assert [a["app"] for a in listed(*where)] == ([] if deleted else ["acme"])


# --- against a running server ---------------------------------------------------------------------------------


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    yield from _serve(tmp_path, "--log-format", "json", env=_env())


def until(check: Callable[[], bool], seconds: float) -> float:
    """Polls ``check`` until it holds; returns how long that took (fails after ``seconds``)."""
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < seconds, "did not happen in time"
        time.sleep(0.1)
    return time.monotonic() - start


@pytest.mark.e2e
def test_a_running_server_honours_rotation_and_deletion(served: Served, tmp_path: Path) -> None:
    where = ["--data", str(tmp_path / "data")]
    created = ok("create", "acme", *where)
    with httpx.Client(base_url=served.base, timeout=10) as client:

        def status(key: str) -> int:
            return client.get("/v1/webhooks", headers={"Authorization": f"Bearer {key}"}).status_code

        def user_status(token: str) -> int:
            return client.get("/v1/me/unread-count", headers={"Authorization": f"Bearer {token}"}).status_code

        old_key = created["api_key"]
        assert status(old_key) == 200  # now cached by the server
        new_key = ok("rotate-key", "acme", "--grace", "3s", *where)["api_key"]
        assert status(new_key) == 200
        assert status(old_key) == 200  # within its grace
        # Refused once its grace is over (the exact boundary is tests/api/test_rotation.py's, on a fake clock).
        until(lambda: status(old_key) == 401, seconds=15)
        assert status(new_key) == 200

        token = subprocess.run(
            [TIDINGS, "token", "--app", "acme", "--user", "alice", *where],
            capture_output=True,
            text=True,
            timeout=60,
            env=_env(),
            check=True,
        ).stdout.strip()
        assert user_status(token) == 200
        ok("delete", "acme", "--yes", *where)
        until(lambda: status(new_key) == 401 and user_status(token) == 401, seconds=10)
