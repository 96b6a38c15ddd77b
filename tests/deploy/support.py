"""The shipped deployment files, loaded for static checks, and what the app really serves to check them against.

No Docker engine or cluster runs here, so the files are read as data: YAML documents, the env file, the haproxy
config. The app's own routes come from building it (``tidings.service.build_app``) over a temporary SQLite
store, never from a hand-kept list.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import socket
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx
import yaml

from tidings.service import build_app, close_runtime, open_runtime
from tidings.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE = DEPLOY / "docker-compose.yml"
ENV_FILE = DEPLOY / "tidings.env"
HAPROXY_CFG = DEPLOY / "haproxy.cfg"
DOCKERFILE = DEPLOY / "Dockerfile"
ENTRYPOINT = DEPLOY / "entrypoint.sh"

ROLES = ("api", "gateway", "worker")  # each serves /healthz, /readyz and /metrics
TRAFFIC_ROLES = ("api", "gateway")  # the roles a Service or the balancer sends requests to
Doc = dict[str, Any]


def setting_names() -> set[str]:
    """Every variable ``Settings.from_env`` reads: ``TIDINGS_<FIELD>``."""
    return {f"TIDINGS_{f.name.upper()}" for f in dataclasses.fields(Settings)}


def store_variables() -> set[str]:
    """Variables a backend reads itself, outside ``Settings`` (the PostgreSQL store's partition count)."""
    from tidings.backends.sql import postgres

    return {postgres.PARTITIONS_ENV}


def yaml_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml"))


@functools.cache  # the files do not change during a run; callers only read what comes back
def load_all(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def kustomization() -> Doc:
    (doc,) = load_all(K8S / "kustomization.yaml")
    result: Doc = doc
    return result


def k8s_objects() -> list[Doc]:
    """Every object the kustomization applies, in file order."""
    return [doc for name in kustomization()["resources"] for doc in load_all(K8S / name)]


def objects_of(kind: str) -> dict[str, Doc]:
    return {doc["metadata"]["name"]: doc for doc in k8s_objects() if doc["kind"] == kind}


def pod_spec(deployment: Doc) -> Doc:
    spec: Doc = deployment["spec"]["template"]["spec"]
    return spec


def container(deployment: Doc) -> Doc:
    (only,) = pod_spec(deployment)["containers"]
    result: Doc = only
    return result


def pod_labels(deployment: Doc) -> dict[str, str]:
    labels: dict[str, str] = deployment["spec"]["template"]["metadata"]["labels"]
    return labels


def role_of(deployment: Doc) -> str:
    role: str = container(deployment)["args"][0]
    return role


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def config_value(name: str) -> str:
    value: str = objects_of("ConfigMap")["tidings-config"]["data"][name]
    return value


def env_file(path: Path = ENV_FILE) -> dict[str, str]:
    """``NAME=value`` lines of an env file (comments and blank lines skipped; no quoting, as compose reads it)."""
    pairs = (line.split("=", 1) for line in _lines(path) if "=" in line)
    return {name.strip(): value.strip() for name, value in pairs}


def commented_env_values(name: str, path: Path = ENV_FILE) -> list[str]:
    """Values of ``name`` in commented-out alternatives (``#   NAME=value  ...``) of an env file."""
    pattern = re.compile(rf"^#\s*{re.escape(name)}=(\S+)")
    return [m.group(1) for line in path.read_text().splitlines() if (m := pattern.match(line))]


def _lines(path: Path) -> Iterator[str]:
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            yield line


def seconds(duration: str | int) -> float:
    """A compose duration (``30s``, ``1m30s``, ``500ms``) or a plain number, in seconds."""
    if isinstance(duration, int):
        return float(duration)
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", duration)
    assert "".join(n + u for n, u in parts) == duration, f"not a duration: {duration!r}"
    return sum(float(n) * units[u] for n, u in parts)


def compose() -> Doc:
    (doc,) = load_all(COMPOSE)
    result: Doc = doc
    return result


def tidings_services() -> dict[str, Doc]:
    """The compose services that run the Tidings image (those built from deploy/Dockerfile)."""
    services: dict[str, Doc] = compose()["services"]
    return {name: svc for name, svc in services.items() if "build" in svc}


def haproxy_lines(path: Path = HAPROXY_CFG) -> list[list[str]]:
    """The config's lines as words, comments dropped, each section header included."""
    lines = (raw.split("#", 1)[0].split() for raw in path.read_text().splitlines())
    return [words for words in lines if words]


def haproxy_sections(path: Path = HAPROXY_CFG) -> dict[str, list[list[str]]]:
    """``"backend api"`` -> its lines; top-level keywords open sections."""
    heads = {"global", "defaults", "frontend", "backend", "listen", "resolvers"}
    sections: dict[str, list[list[str]]] = {}
    current: list[list[str]] = []
    for words in haproxy_lines(path):
        if words[0] in heads:
            current = sections.setdefault(" ".join(words[:2]), [])
        else:
            current.append(words)
    return sections


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclasses.dataclass(frozen=True)
class Served:
    """What one role's app answers: GET statuses of the asked paths, and its route paths (WebSocket included)."""

    statuses: dict[str, int]
    routes: frozenset[str]


async def served(paths: Iterable[str]) -> dict[str, Served]:
    """GETs ``paths`` on the app each role builds, over a runtime on a temporary SQLite store."""
    asked = sorted(set(paths))
    with tempfile.TemporaryDirectory() as data:
        runtime = await open_runtime(Settings(data=data))
        try:
            return {role: await _serve(build_app(runtime, [role]), asked) for role in ROLES}
        finally:
            await close_runtime(runtime)


async def _serve(app: Any, paths: list[str]) -> Served:
    routes = frozenset(path for route in app.routes if isinstance(path := getattr(route, "path", None), str))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://tidings.test") as client:
        statuses = {path: (await client.get(path)).status_code for path in paths}
    return Served(statuses, routes)
