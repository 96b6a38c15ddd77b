"""The JS SDK's own checks, run from the Python suite so CI runs them: its node unit tests (against fakes of
WebSocket, EventSource, fetch and timers) and the TypeScript check of its JSDoc types.

Node is needed for both; the TypeScript check also needs ``npm ci`` in clients/js. Without them these tests
skip, except under ``TIDINGS_TEST_REQUIRE`` (CI), where they fail.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

JS = Path(__file__).resolve().parents[2] / "clients" / "js"
TSC = JS / "node_modules" / ".bin" / "tsc"


def _missing(what: str) -> None:
    if os.environ.get("TIDINGS_TEST_REQUIRE"):
        pytest.fail(f"{what} (TIDINGS_TEST_REQUIRE is set)")
    pytest.skip(what)


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=JS, capture_output=True, text=True, timeout=60, check=False)


def test_js_unit_tests_pass() -> None:
    """`node --test` over clients/js/test: reconnects, resume, fallback, close codes, REST calls."""
    node = shutil.which("node")
    if node is None:
        _missing("node is not installed")
    tests = sorted(str(path.relative_to(JS)) for path in (JS / "test").glob("*.test.js"))
    done = _run([str(node), "--test", *tests])
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "# fail 0" in done.stdout


def test_js_types_check() -> None:
    """`tsc --noEmit` with allowJs, checkJs and strict over the SDK and the demo page."""
    if shutil.which("node") is None or not TSC.exists():
        _missing("TypeScript is not installed: run `npm ci` in clients/js")
    done = _run([str(TSC), "-p", "tsconfig.json"])
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
