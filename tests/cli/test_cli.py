"""The command line teaches: every command and flag is described with its default, role flags appear only
on the roles that use them, and mistakes end with one line that says what to fix."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tidings.cli import _parser, duration

TIDINGS = str(Path(sys.executable).parent / "tidings")
ROOT = Path(__file__).resolve().parents[2]
ROLE_COMMANDS = ("serve", "api", "worker", "gateway")


def tidings(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [TIDINGS, *args], capture_output=True, text=True, timeout=timeout, check=False, env=os.environ
    )


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def test_every_command_has_a_one_line_description() -> None:
    out = tidings("--help")
    assert out.returncode == 0
    for name in (*ROLE_COMMANDS, "apps", "token", "bench"):
        assert re.search(rf"^\s+{name}\s+\S", out.stdout, re.MULTILINE), (name, out.stdout)


def test_every_flag_has_help_that_names_its_default() -> None:
    commands = _subparsers(_parser())
    commands.update({f"apps {k}": v for k, v in _subparsers(commands["apps"]).items()})
    for name, sub in commands.items():
        if name in ("bench", "apps"):
            continue
        formatter = sub._get_formatter()
        for action in sub._actions:
            if not action.option_strings or "-h" in action.option_strings or action.required:
                continue
            assert action.help, (name, action.option_strings)
            shown = formatter._expand_help(action)  # as --help prints it, "(default: …)" added
            assert "default" in shown, (name, action.option_strings, shown)


@pytest.mark.parametrize(
    ("command", "present", "absent"),
    [
        ("worker", {"--host", "--port", "--data", "--log-format"}, {"--demo", "--ws-port", "--ws-server"}),
        ("api", {"--host", "--port", "--demo"}, {"--ws-port", "--ws-server"}),
        ("gateway", {"--port", "--ws-port", "--ws-server"}, {"--demo"}),
        ("serve", {"--port", "--ws-port", "--ws-server", "--demo", "--log-format"}, set()),
    ],
)
def test_role_flags_appear_only_on_their_roles(command: str, present: set[str], absent: set[str]) -> None:
    out = tidings(command, "--help")
    assert out.returncode == 0, out.stderr
    flags = set(re.findall(r"(--[a-z-]+)", out.stdout))
    assert present <= flags
    assert not absent & flags


def test_apps_alone_prints_the_apps_help() -> None:
    out = tidings("apps")
    assert "create" in out.stdout
    assert "usage: tidings apps" in out.stdout
    assert "Traceback" not in out.stderr


def test_bench_help_works() -> None:
    out = tidings("bench", "--help")
    assert out.returncode == 0, out.stderr
    assert "usage: tidings bench" in out.stdout


@pytest.mark.parametrize("command", ["run", "report", "profile"])
def test_each_bench_command_has_help(command: str) -> None:
    out = tidings("bench", command, "--help")
    assert out.returncode == 0, out.stderr
    assert f"usage: tidings bench {command}" in out.stdout
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90), ("45s", 45), ("30m", 1800), ("1h", 3600), ("7d", 604800)]
)
def test_token_ttl_takes_units(text: str, seconds: float) -> None:
    assert duration(text) == seconds


@pytest.mark.parametrize("text", ["0", "-5", "-1h", "0m", "abc", "1w", "nan", ""])
def test_token_ttl_refuses_zero_negatives_and_nonsense(text: str) -> None:
    out = tidings("token", "--app", "a", "--user", "u", "--ttl", text)
    assert out.returncode == 2
    assert "argument --ttl:" in out.stderr
    assert "Traceback" not in out.stderr


def test_token_ttl_with_units_mints_a_token(tmp_path: Path) -> None:
    data = str(tmp_path)
    assert tidings("apps", "create", "acme", "--data", data).returncode == 0
    out = tidings("token", "--app", "acme", "--user", "alice", "--ttl", "30m", "--data", data)
    assert out.returncode == 0, out.stderr
    payload = json.loads(_b64(out.stdout.strip().split(".")[1]))
    assert payload["exp"] - payload["iat"] == 1800


def _b64(part: str) -> bytes:
    import base64

    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def test_a_busy_port_ends_with_one_line_that_says_how_to_pick_another(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = tidings("serve", "--port", str(port), "--data", str(tmp_path))
    assert out.returncode != 0
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert str(port) in lines[0]
    assert "--port" in lines[0]


@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
def test_make_serve_passes_port_and_host() -> None:
    out = subprocess.run(
        ["make", "-n", "serve", "PORT=8090", "HOST=0.0.0.0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "VENV": sys.prefix},  # the stamp's venv exists: only the serve line is printed
    )
    assert "--port 8090" in out.stdout
    assert "--host 0.0.0.0" in out.stdout
