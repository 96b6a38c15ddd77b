"""External binaries the deploy tests use (Debian's ``prometheus`` package: prometheus, promtool). Missing,
they skip the test, except under ``TIDINGS_TEST_REQUIRE`` (CI), where they fail it."""

from __future__ import annotations

import os
import shutil

import pytest


def require(binary: str, package: str) -> str:
    path = shutil.which(binary)
    if path is None:
        reason = f"{binary} is not installed (apt-get install -y {package})"
        if os.environ.get("TIDINGS_TEST_REQUIRE"):
            pytest.fail(f"{reason}; TIDINGS_TEST_REQUIRE is set")
        pytest.skip(reason)
    return path
