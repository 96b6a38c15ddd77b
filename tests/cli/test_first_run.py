"""A first `tidings serve`: the banner is a plain block (not buried in JSON logs), it does not advertise
/admin while admin routes are off, logs follow --log-format, and GET / links what the process serves."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.e2e

TIDINGS = str(Path(sys.executable).parent / "tidings")


@dataclass
class Served:
    base: str
    stdout: Path
    stderr: Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _serve(tmp_path: Path, *args: str, env: dict[str, str]) -> Iterator[Served]:
    port = _free_port()
    served = Served(f"http://127.0.0.1:{port}", tmp_path / "out.log", tmp_path / "err.log")
    argv = [TIDINGS, "serve", "--port", str(port), "--data", str(tmp_path / "data"), *args]
    with served.stdout.open("wb") as out, served.stderr.open("wb") as err:
        proc = subprocess.Popen(argv, stdout=out, stderr=err, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while "health" not in served.stdout.read_text():  # the banner's last line: the server is up
            assert proc.poll() is None, served.stderr.read_text()
            assert time.monotonic() < deadline, served.stderr.read_text()
            time.sleep(0.05)
        yield served
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


@pytest.fixture
def admin_off(tmp_path: Path) -> Iterator[Served]:
    yield from _serve(tmp_path, "--log-format", "console", env=_env())


@pytest.fixture
def admin_on_auto_logs(tmp_path: Path) -> Iterator[Served]:
    yield from _serve(tmp_path, "--demo", env=_env(TIDINGS_ADMIN_TOKEN="first-hour-admin"))


def test_banner_says_admin_is_off_and_logs_are_for_humans(admin_off: Served) -> None:
    banner = admin_off.stdout.read_text()
    assert banner.startswith("Tidings ")
    assert f"{admin_off.base}/admin" not in banner  # not advertised as usable
    assert "TIDINGS_ADMIN_TOKEN" in banner
    assert "/demo" not in banner  # the demo is off
    assert f"{admin_off.base}/docs" in banner
    lines = [line for line in admin_off.stderr.read_text().splitlines() if line.strip()]
    assert lines
    assert not any(line.startswith("{") for line in lines), lines


def test_home_page_links_what_is_served(admin_off: Served) -> None:
    page = httpx.get(admin_off.base + "/", trust_env=False)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    for path in ("/docs", "/asyncapi.json", "/admin", "/healthz", "/metrics"):
        assert f'href="{path}"' in page.text
    assert 'href="/demo"' not in page.text
    assert "TIDINGS_ADMIN_TOKEN" in page.text


def test_admin_page_says_its_routes_are_off(admin_off: Served) -> None:
    page = httpx.get(admin_off.base + "/admin", trust_env=False)
    assert page.status_code == 200
    assert 'data-admin="off"' in page.text
    assert '<p id="admin-off" class="off">' in page.text  # shown, not hidden
    assert '<form id="token-form" class="token" hidden' in page.text
    assert "admin routes are off" in page.text.lower()


def test_with_admin_and_demo_on_the_banner_lists_both_and_piped_logs_are_json(
    admin_on_auto_logs: Served,
) -> None:
    banner = admin_on_auto_logs.stdout.read_text()
    assert f"{admin_on_auto_logs.base}/admin" in banner
    assert f"{admin_on_auto_logs.base}/demo" in banner
    page = httpx.get(admin_on_auto_logs.base + "/", trust_env=False).text
    assert 'href="/demo"' in page
    admin = httpx.get(admin_on_auto_logs.base + "/admin", trust_env=False).text
    assert 'data-admin="off"' not in admin
    assert '<p id="admin-off" class="off" hidden>' in admin
    lines = [line for line in admin_on_auto_logs.stderr.read_text().splitlines() if line.strip()]
    assert lines
    for line in lines:  # stderr is a file, not a terminal: --log-format auto means JSON
        json.loads(line)
