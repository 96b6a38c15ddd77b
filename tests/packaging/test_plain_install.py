"""A plain install runs the embedded default: build the wheel, install it alone (no extras) into a fresh venv
with the pinned constraints, then serve, create an app, post an event and read it back over SSE.

This is the user's first minute, so it runs in the default suite (marked ``e2e``); it takes a minute or two,
most of it ``pip install`` (from the local cache and package indexes pip is configured with).

No ``__init__.py`` in this directory on purpose: a test package named ``packaging`` would shadow the
``packaging`` library for every test that imports it (matplotlib does).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(360)]

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _run(argv: list[str], env: dict[str, str], timeout: float = 300) -> str:
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, (
        f"{argv} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    )
    return done.stdout


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A fresh venv holding only the wheel and its base dependencies, and an environment without the
    checkout on PYTHONPATH (so what runs is what the wheel installed)."""
    tmp = tmp_path_factory.mktemp("plain")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    wheels = tmp / "wheels"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(ROOT)], env)
    (wheel,) = wheels.glob("tidings-*.whl")
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], env)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    _run([*pip, "-c", str(ROOT / "constraints.txt"), str(wheel)], env)
    return venv, env


def test_plain_install_serves_the_embedded_default(venv: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    root, env = venv
    tidings = str(root / "bin" / "tidings")
    data = tmp_path / "data"
    port = _free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [tidings, "serve", "--port", str(port), "--data", str(data)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**env, "PYTHONUNBUFFERED": "1"},
            start_new_session=True,
        )
    try:
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=5.0, trust_env=False) as http:
            _wait_ready(http, proc, log)
            app = json.loads(_run([tidings, "apps", "create", "plain", "--data", str(data)], env))
            token = _run(
                [tidings, "token", "--app", "plain", "--user", "alice", "--data", str(data)], env
            ).strip()
            sent = http.post(
                "/v1/events",
                headers={"Authorization": f"Bearer {app['api_key']}"},
                json={"type": "post.liked", "actor": {"id": "bob"}, "recipients": ["alice"]},
            )
            assert sent.status_code == 202, sent.text
            event_id = sent.json()["id"]
            assert _first_sse_notification(http, token)["event_id"] == event_id
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    assert "Traceback" not in log.read_text(errors="replace")


def _wait_ready(http: httpx.Client, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"tidings serve exited with {proc.returncode}:\n{log.read_text(errors='replace')}")
        try:
            if http.get("/readyz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    pytest.fail(f"tidings serve not ready in 30 s:\n{log.read_text(errors='replace')}")


def _first_sse_notification(http: httpx.Client, token: str) -> dict[str, object]:
    headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
    # after=0: the whole inbox. Without it the stream starts at the user's last seq, and a worker quicker than
    # this request would already have stored the notification (it would never be sent).
    stream = http.stream("GET", "/v1/stream", params={"after": 0}, headers=headers, timeout=15.0)
    with stream as response:
        assert response.status_code == 200
        kind = None
        for line in response.iter_lines():
            if line.startswith("event:"):
                kind = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and kind == "notification":
                data: dict[str, object] = json.loads(line.split(":", 1)[1])
                return data
    pytest.fail("the stream ended before a notification")
