"""`tidings plan` as a user runs it: a subprocess of the installed command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _tidings(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-c", "import sys; from tidings.cli import main; sys.exit(main())", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=ROOT, check=False)


def test_help_names_the_workload_and_the_bench_file() -> None:
    done = _tidings("plan", "--help")
    assert done.returncode == 0, done.stderr
    assert "--bench FILE" in done.stdout
    assert "workload" in done.stdout


def test_a_run_prints_a_table_and_json() -> None:
    """The 10M example: a table naming every role, and JSON with the same process counts."""
    table = _tidings("plan", "docs/workloads/social-10m.yaml")
    assert table.returncode == 0, table.stderr
    for word in ("api", "worker", "gateway", "PostgreSQL", "Broker", "per million notifications"):
        assert word in table.stdout
    done = _tidings("plan", "docs/workloads/social-10m.yaml", "--json", "--price", "core_hour=0.05")
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    assert [role["name"] for role in plan["roles"]] == ["api", "worker", "gateway"]
    assert plan["prices"]["core_hour"] == 0.05
    for role in plan["roles"]:
        assert f"{role['processes']} processes" in table.stdout


def test_a_bad_workload_exits_1_with_the_reason(tmp_path: Path) -> None:
    path = tmp_path / "w.json"
    path.write_text('{"daily_users": 10, "typo": 1}')
    done = _tidings("plan", str(path))
    assert done.returncode == 1
    assert "unknown workload keys: typo" in done.stderr
