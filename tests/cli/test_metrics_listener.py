"""Where /metrics is served (issue 17): a role process (``tidings api``) keeps it off its public port and
serves it on ``--port + 1000`` (or ``--metrics-port``); ``tidings serve`` keeps it on its one port."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .test_first_run import TIDINGS, _env, _free_port

pytestmark = pytest.mark.e2e


def _started(tmp_path: Path, command: str, port: int, *args: str) -> Iterator[str]:
    """Runs ``tidings COMMAND --port PORT ARGS`` until its banner is out; yields the banner."""
    out, err = tmp_path / f"{command}.out", tmp_path / f"{command}.err"
    argv = [TIDINGS, command, "--port", str(port), "--data", str(tmp_path / "data"), *args]
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen(argv, stdout=stdout, stderr=stderr, env=_env(), start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while "health" not in out.read_text():  # the banner's last line: the server is up
            assert proc.poll() is None, err.read_text()
            assert time.monotonic() < deadline, err.read_text()
            time.sleep(0.05)
        yield out.read_text()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)


def _get(port: int, path: str) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{port}{path}", trust_env=False, timeout=5)


def _free_pair() -> int:
    """A free port whose ``+ 1000`` is free too."""
    while True:
        port = _free_port()
        if port + 1000 < 65536 and port + 1000 != port:
            try:
                _get(port + 1000, "/")
            except httpx.TransportError:
                return port


def test_a_role_process_serves_metrics_on_port_plus_1000_only(tmp_path: Path) -> None:
    port = _free_pair()
    for banner in _started(tmp_path, "api", port):
        assert f"http://127.0.0.1:{port + 1000}/metrics" in banner
        assert _get(port, "/metrics").status_code == 404
        assert _get(port, "/healthz").status_code == 200
        scraped = _get(port + 1000, "/metrics")
        assert scraped.status_code == 200
        assert "tidings_log_lag" in scraped.text
        assert _get(port + 1000, "/healthz").status_code == 200
        assert _get(port + 1000, "/v1/events").status_code == 404  # nothing else on the metrics listener


def test_metrics_port_flag_picks_the_port(tmp_path: Path) -> None:
    port, metrics_port = _free_port(), _free_port()
    for _ in _started(tmp_path, "worker", port, "--metrics-port", str(metrics_port)):
        assert _get(port, "/metrics").status_code == 404
        assert _get(metrics_port, "/metrics").status_code == 200


def test_serve_keeps_metrics_on_its_port(tmp_path: Path) -> None:
    port = _free_port()
    for banner in _started(tmp_path, "serve", port):
        assert f"http://127.0.0.1:{port}/metrics" in banner
        assert _get(port, "/metrics").status_code == 200
