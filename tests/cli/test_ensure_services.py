"""scripts/ensure-services.sh says what it is doing before each slow apt step (run with a fake apt-get)."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_tools_install_prints_a_line_before_each_apt_step(tmp_path: Path) -> None:
    fake = tmp_path / "bin"
    fake.mkdir()
    log = tmp_path / "apt.log"
    apt = fake / "apt-get"
    apt.write_text(f'#!/bin/sh\necho "$@" >> {log}\n')
    apt.chmod(0o755)
    # PATH holds only the fake apt-get: every tool looks missing, and nothing real is installed.
    done = subprocess.run(
        ["/bin/bash", str(ROOT / "scripts" / "ensure-services.sh"), "tools"],
        env={"PATH": str(fake)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert lines[0].startswith("ensure-services: apt-get update")
    installs = [line for line in lines if line.startswith("ensure-services: apt-get install")]
    assert any("chromium" in line for line in installs), lines
    assert len(installs) == log.read_text().count("install")  # one line before each install
    assert any(line.startswith("ensure-services: installed chromium in ") for line in lines)
