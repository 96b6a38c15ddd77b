"""docker-compose.yml, its env file, the Dockerfile and the entrypoint, checked without a Docker engine."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tidings.cli import main as cli_main

from .support import (
    COMPOSE,
    DEPLOY,
    DOCKERFILE,
    ENTRYPOINT,
    ROLES,
    ROOT,
    commented_env_values,
    compose,
    env_file,
    seconds,
    served,
    setting_names,
    store_variables,
    tidings_services,
)

PINNED_IMAGE = re.compile(r"^[a-z0-9./-]+:[A-Za-z0-9._-]+$")


def test_each_role_runs_replicated_from_one_image() -> None:
    """api, gateway and worker each run 2+ replicas of one image built from deploy/Dockerfile."""
    services = tidings_services()
    assert sorted(svc["command"][0] for svc in services.values()) == sorted(ROLES)
    assert len({svc["image"] for svc in services.values()}) == 1
    for name, svc in services.items():
        assert svc["deploy"]["replicas"] >= 2, name
        context = (COMPOSE.parent / svc["build"]["context"]).resolve()
        assert context == ROOT, name
        assert (context / svc["build"]["dockerfile"]).resolve() == DOCKERFILE
        with pytest.raises(SystemExit) as exited:
            cli_main([*svc["command"], "--help"])
        assert exited.value.code == 0, name


def test_other_images_are_pinned_and_references_resolve() -> None:
    """Third-party images carry a version tag, and every depends_on, secret and volume named exists."""
    doc = compose()
    services = doc["services"]
    for name, svc in services.items():
        if "build" not in svc:
            assert PINNED_IMAGE.match(svc["image"]), name
            assert not svc["image"].endswith(":latest"), name
        for dependency in svc.get("depends_on", []):
            assert dependency in services, (name, dependency)
        for secret in svc.get("secrets", []):
            assert secret in doc["secrets"], (name, secret)
        for volume in svc.get("volumes", []):
            source = volume.split(":", 1)[0]
            assert source in doc.get("volumes", {}) or (COMPOSE.parent / source).exists(), (name, source)


def test_engines_keep_their_data_and_alternatives_sit_behind_profiles() -> None:
    """PostgreSQL and NATS (JetStream on) keep data on volumes; Redis and RabbitMQ run only in their profile."""
    services = compose()["services"]
    assert "-js" in services["nats"]["command"]
    for name in ("postgres", "nats", "redis", "rabbitmq"):
        assert any(v.split(":", 1)[0] in compose()["volumes"] for v in services[name]["volumes"]), name
        assert "healthcheck" in services[name], name
    assert "profiles" not in services["postgres"]
    assert "profiles" not in services["nats"]
    assert services["redis"]["profiles"] == ["redis"]
    assert services["rabbitmq"]["profiles"] == ["rabbitmq"]


def test_env_file_names_only_real_settings() -> None:
    """Every variable in tidings.env is one Tidings reads, or the _FILE form of a setting (the entrypoint's)."""
    known = setting_names() | store_variables()
    for name in env_file():
        assert name in known or name.removesuffix("_FILE") in known, name
    for name, svc in tidings_services().items():
        assert svc["env_file"] == "tidings.env", name
        for variable in svc.get("environment", {}):
            assert variable in known, (name, variable)


def test_backend_urls_point_at_compose_services() -> None:
    """The store and broker URLs (and the commented alternatives) name services of this compose file."""
    services = compose()["services"]
    env = env_file()
    urls = [env["TIDINGS_STORE"], env["TIDINGS_BROKER"], *commented_env_values("TIDINGS_BROKER")]
    assert len(urls) >= 4  # nats, plus redis and rabbitmq as alternatives
    for url in urls:
        host = urlsplit(url).hostname
        assert host in services, url
        assert host not in tidings_services(), url
    for svc in tidings_services().values():
        assert {urlsplit(env["TIDINGS_STORE"]).hostname, urlsplit(env["TIDINGS_BROKER"]).hostname} <= set(
            svc["depends_on"]
        )


def test_admin_token_is_a_secret_not_a_value() -> None:
    """TIDINGS_ADMIN_TOKEN never appears in the env file; it is read from the mounted compose secret."""
    env = env_file()
    assert "TIDINGS_ADMIN_TOKEN" not in env
    secret_path = env["TIDINGS_ADMIN_TOKEN_FILE"]
    match = re.fullmatch(r"/run/secrets/([a-z0-9_]+)", secret_path)
    assert match, secret_path
    assert match.group(1) in compose()["secrets"]
    for name, svc in tidings_services().items():
        assert match.group(1) in svc["secrets"], name


def test_stop_grace_period_outlasts_the_drain() -> None:
    """Docker waits out the whole drain after SIGTERM (two steps of TIDINGS_DRAIN_TIMEOUT) before it kills."""
    drain = 2 * float(env_file()["TIDINGS_DRAIN_TIMEOUT"])  # the worker's batch, then in-flight requests
    for name, svc in tidings_services().items():
        assert svc.get("stop_signal", "SIGTERM") == "SIGTERM", name
        assert seconds(svc["stop_grace_period"]) > drain, name


def test_containers_run_locked_down() -> None:
    """Replicas run with a read-only root filesystem (a tmpfs /tmp), no capabilities, no privilege gain."""
    for name, svc in tidings_services().items():
        assert svc["read_only"] is True, name
        assert "/tmp" in svc["tmpfs"], name
        assert svc["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in svc["security_opt"], name


async def test_healthchecks_ask_paths_the_app_serves() -> None:
    """Each role is healthy when GET /readyz on TIDINGS_PORT answers 200 on the app that role builds."""
    port = env_file()["TIDINGS_PORT"]
    urls = {}
    for svc in tidings_services().values():
        (url,) = re.findall(r"http://[^'\"]+", " ".join(svc["healthcheck"]["test"]))
        urls[svc["command"][0]] = urlsplit(url)
    answers = await served(url.path for url in urls.values())
    assert sorted(urls) == sorted(ROLES)
    for role, url in urls.items():
        assert url.path == "/readyz", role
        assert str(url.port) == port, role
        assert answers[role].statuses[url.path] == 200, role


def test_dockerfile_builds_a_non_root_tidings_image() -> None:
    """python:3.11-slim, pip install with the constraints file and real extras, a numeric non-root user."""
    text = DOCKERFILE.read_text()
    assert re.findall(r"^FROM (\S+)", text, re.M) == ["python:3.11-slim", "python:3.11-slim"]
    install = re.search(r"pip install -c constraints\.txt '\.\[([a-z,]+)\]'( greenlet)?$", text, re.M)
    assert install, "pip install with the constraints file"
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert set(install.group(1).split(",")) <= set(extras)
    (user,) = re.findall(r"^USER (\d+):(\d+)$", text, re.M)
    assert int(user[0]) > 0
    assert int(user[1]) > 0
    assert re.search(r'^ENTRYPOINT \["tidings-entrypoint", "tidings"\]$', text, re.M)
    copied = [
        p for s in re.findall(r"^COPY (?!--from)(?:--chmod=\S+ )?(.+) \S+$", text, re.M) for p in s.split()
    ]
    assert "src" in copied
    # The build context holds only what the allow-list lets in: every COPY source must be on it.
    allowed = re.findall(r"^!(\S+?)/?$", (DEPLOY / "Dockerfile.dockerignore").read_text(), re.M)
    for path in copied:
        assert (ROOT / path).exists(), path
        assert path in allowed, path


def test_entrypoint_turns_secret_files_into_settings(tmp_path: Path) -> None:
    """With TIDINGS_ADMIN_TOKEN_FILE set, tidings sees TIDINGS_ADMIN_TOKEN (no trailing newline), not _FILE."""
    secret = tmp_path / "token"
    secret.write_text("s3cret-token\n")
    show = "import os; from tidings.settings import Settings; print(repr(Settings.from_env().admin_token)); "
    show += "print('TIDINGS_ADMIN_TOKEN_FILE' in os.environ)"
    result = _entrypoint({"TIDINGS_ADMIN_TOKEN_FILE": str(secret)}, sys.executable, "-c", show)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["'s3cret-token'", "False"]


def test_entrypoint_refuses_a_missing_secret_file(tmp_path: Path) -> None:
    """A _FILE variable naming a file that is not there stops the container with a message, before tidings."""
    result = _entrypoint({"TIDINGS_STORE_FILE": str(tmp_path / "absent")}, "true")
    assert result.returncode == 1
    assert "TIDINGS_STORE_FILE" in result.stderr


def test_entrypoint_execs_the_command() -> None:
    """The entrypoint replaces itself with the command, so tidings is PID 1 and receives SIGTERM itself."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
    with subprocess.Popen(
        ["sh", str(ENTRYPOINT), "sh", "-c", "echo $$"], env=clean, stdout=subprocess.PIPE, text=True
    ) as process:
        out, _ = process.communicate(timeout=60)
    assert process.returncode == 0
    assert int(out) == process.pid  # the command runs in the entrypoint's own process
    assert os.access(ENTRYPOINT, os.X_OK)


def _entrypoint(env: dict[str, str], *command: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
    return subprocess.run(
        ["sh", str(ENTRYPOINT), *command], env=clean | env, capture_output=True, text=True, timeout=60
    )
