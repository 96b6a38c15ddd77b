"""Backends under test, discovered from ``provide_<name>.py`` modules beside this file.

A provider module defines ``NAME`` and any of::

    async def available() -> bool                                   # is its server reachable?
    async def open_store(settings, clock, ns) -> Store
    async def open_log(settings, store, ns) -> EventLog             # ``store``: for Idempotency, if it needs it
    async def open_bus(settings, ns) -> Bus
    async def cleanup(ns) -> None                                   # drop what ``ns`` created

``ns`` is a namespace unique to one test (a stream prefix, a schema, a key prefix), the same across the
restarts inside that test. A provider whose server is unreachable is skipped, unless TIDINGS_TEST_REQUIRE is
set (CI sets it), where it fails: CI must never pass by skipping.
"""

from __future__ import annotations

import importlib
import os
import secrets
from pathlib import Path
from types import ModuleType

import pytest

HERE = Path(__file__).parent


def discover() -> dict[str, ModuleType]:
    found: dict[str, ModuleType] = {}
    for path in sorted(HERE.glob("provide_*.py")):
        module = importlib.import_module(path.stem)
        found[module.NAME] = module
    return found


PROVIDERS = discover()
STORES = [name for name, m in PROVIDERS.items() if hasattr(m, "open_store")]
LOGS = [name for name, m in PROVIDERS.items() if hasattr(m, "open_log")]
BUSES = [name for name, m in PROVIDERS.items() if hasattr(m, "open_bus")]


def namespace() -> str:
    return "t" + secrets.token_hex(5)


async def require(provider: ModuleType) -> None:
    available = getattr(provider, "available", None)
    if available is None or await available():
        return
    message = f"{provider.NAME} server is not reachable"
    if os.environ.get("TIDINGS_TEST_REQUIRE"):
        pytest.fail(message)
    pytest.skip(message)
