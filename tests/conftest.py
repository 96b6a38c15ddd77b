"""The fast tier's guard: under ``--fast-tier`` (what ``make test-fast`` passes) a test that connects or binds a
socket or starts a process fails, so the folders listed as fast in the Makefile cannot silently grow a service
or subprocess dependency. Without the option nothing is patched.

Hypothesis runs without its per-example deadline and its too-slow health check: both are wall-clock bounds,
which a loaded machine (other engineers' runs, or ``make test``'s parallel workers) breaks now and then with
an "Unreliable test timings" failure that says nothing about the code. Speed is the benchmarks' business."""

from __future__ import annotations

import socket
import subprocess
from typing import Any, NoReturn

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("tidings", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("tidings")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--fast-tier",
        action="store_true",
        help="fail any test that opens a network socket or spawns a process (make test-fast)",
    )


def _forbidden(what: str) -> Any:
    def refuse(*args: object, **kwargs: object) -> NoReturn:
        raise AssertionError(f"the fast tier has no {what}: move this test out of the Makefile's FAST list")

    return refuse


@pytest.fixture(autouse=True)
def _fast_tier_guard(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    if request.config.getoption("--fast-tier"):
        for name in ("connect", "connect_ex", "bind"):
            monkeypatch.setattr(socket.socket, name, _forbidden("sockets"))
        monkeypatch.setattr(subprocess.Popen, "_execute_child", _forbidden("subprocesses"))
    return
