"""The fast tier's guard: under ``--fast-tier`` (what ``make test-fast`` passes) a test that connects or binds a
socket or starts a process fails, so the folders listed as fast in the Makefile cannot silently grow a service
or subprocess dependency. Without the option nothing is patched."""

from __future__ import annotations

import socket
import subprocess
from typing import Any, NoReturn

import pytest


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
