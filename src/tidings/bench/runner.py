"""What ``tidings bench run`` runs at each size, how often, and the facts about the machine stored with it.

``full`` is the measurement (minutes); ``tiny`` is the smoke size CI runs to keep the harness working (seconds
per scenario): it checks that results come out well-formed, never how fast anything is.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import orjson

from tidings.bench import SCENARIOS, ingest, scenarios
from tidings.bench.fanout import PER_CONN, FanoutSpec, run_fanout
from tidings.bench.harness import BENCH_DIR

POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
FANOUT_KINDS = (
    "tidings",
    "tidings-gc",
    "tidings-tuned",
    "tidings-bare",
    "raw",
    "tidings-uvicorn",
    "starlette",
    "socketio",
    "node",
    "mosquitto",
)

SENDS = {"webhook": 4000, "web_push": 3000, "email": 2000}  # per path, at full size
Job = tuple[str, Callable[[], Awaitable[dict[str, Any]]]]


def available(kind: str) -> bool:
    """Node needs ``ws`` installed in bench/ (``npm install`` there); Mosquitto must listen on 1883."""
    if kind == "node":
        return shutil.which("node") is not None and (BENCH_DIR / "node_modules" / "ws").is_dir()
    if kind == "mosquitto":
        with socket.socket() as s:
            s.settimeout(0.5)
            return s.connect_ex(("127.0.0.1", 1883)) == 0
    return True


def postgres_reachable(url: str) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", 5432)) == 0 and url.startswith("postgresql://")


def jobs(names: list[str], size: str, kinds: list[str], postgres: str) -> list[Job]:
    tiny = size == "tiny"
    out: list[Job] = []
    if "fanout" in names:
        for kind in kinds or [k for k in FANOUT_KINDS if not tiny or k in ("tidings", "raw", "starlette")]:
            if available(kind):
                per = 10 if tiny else PER_CONN[kind]
                spec = FanoutSpec(
                    kind, connections=20 if tiny else 1000, per_conn=per, client_procs=1 if tiny else 2
                )
                out.append((f"fanout {kind}", partial(run_fanout, spec)))
    if "scaleout" in names:
        for servers in (1, 2):
            spec = FanoutSpec(
                "tidings", 20 if tiny else 1000, 10 if tiny else 600, servers=servers, client_procs=2
            )
            out.append((f"scaleout x{servers}", partial(run_fanout, spec)))
    if "connections" in names:
        plan = [("tidings", 30)] if tiny else [("tidings", 10_000), ("tidings", 19_000)]
        plan += (
            []
            if tiny
            else [(k, 10_000) for k in ("tidings-uvicorn", "starlette", "raw", "node") if available(k)]
        )
        for kind, n in plan:
            procs = 1 if tiny else 4
            out.append((f"connections {kind} {n}", partial(scenarios.run_connections, kind, n, procs)))
    if "latency" in names:
        # The target rate for both shells, and lower rates for the gateway: where the p99 target holds.
        plan = [("tidings", 200)] if tiny else [("tidings", 5000), ("tidings-uvicorn", 5000)]
        plan += [] if tiny else [("tidings", 1000), ("tidings", 2500)]
        secs, conns = (1.0, 20) if tiny else (5.0, 1000)
        for kind, rate in plan:
            job = partial(scenarios.run_latency, kind, rate, 25, secs, conns)
            out.append((f"latency {kind} @{rate}/s", job))
    if "ingest" in names:
        secs = 1.0 if tiny else 5.0
        for kind in ingest.KINDS:  # the bare FastAPI endpoint beside Tidings, in the same run
            single = partial(ingest.run_ingest, 0, 4 if tiny else 32, secs, kind)
            out.append((f"ingest {kind} single", single))
            out.append(
                (f"ingest {kind} batch", partial(ingest.run_ingest, 500, 2 if tiny else 4, secs, kind))
            )
        if not tiny:
            out.append(("ingest batch", partial(ingest.run_ingest, 100, 8, secs)))
    if "celebrity" in names:
        followers = 2_000 if tiny else 1_000_000
        out.append(("celebrity sqlite", partial(scenarios.run_celebrity, "sqlite", followers)))
        if postgres_reachable(postgres):
            out.append(("celebrity postgresql", partial(scenarios.run_celebrity, postgres, followers)))
    if "worker" in names:
        from tidings.bench.worker_rows import run_worker

        events, recipients, rounds = (4, 200, 1) if tiny else (50, 1000, 3)
        out.append(("worker sqlite", partial(run_worker, "sqlite", events, recipients, rounds)))
        if postgres_reachable(postgres):
            out.append(("worker postgresql", partial(run_worker, postgres, events, recipients, rounds)))
    if "growth" in names:
        out.extend(growth_jobs(tiny, postgres if postgres_reachable(postgres) else None))
    if "senders" in names:
        from tidings.bench.senders import CHANNELS, run_senders

        for channel in CHANNELS:
            # Short blocks, alternated many times: both paths see the same (shared, changing) machine.
            block, rounds = (20, 1) if tiny else (100, SENDS[channel] // 100)
            out.append((f"senders {channel}", partial(run_senders, channel, block, rounds)))
    if "engines" in names:
        from tidings.bench.engines import ENGINES, run_engine

        for engine in [*ENGINES, "kafka"]:  # every engine in the same run, one after another
            out.append((f"engines {engine}", partial(run_engine, engine, 200 if tiny else 5000)))
    if "resume" in names:
        for kind in ("tidings",) if tiny else ("tidings", "tidings-uvicorn"):
            n, backlog = (20, 3) if tiny else (10_000, 10)
            out.append(
                (
                    f"resume {kind}",
                    partial(scenarios.run_resume, kind, n, backlog, 1 if tiny else 2),
                )
            )
    if "retention" in names and postgres_reachable(postgres):
        from tidings.bench import retention
        from tidings.settings import Settings

        rows, users = (20_000, 200) if tiny else (10_000_000, 100_000)
        job = partial(
            retention.run,
            url=postgres,
            rows=rows,
            users=users,
            fanout_rows=2_000 if tiny else 50_000,
            sweep_seconds=2.0 if tiny else 30.0,
            settings=Settings(),
        )
        out.append(("retention postgresql", job))
    return out


def growth_jobs(tiny: bool, postgres: str | None = None) -> list[Job]:
    """How the gateway's cost grows with connections and payload size, fan-out's with recipients, and (with
    PostgreSQL) the inbox write's and read's with the rows already in the inbox (``bench.inbox_growth``)."""

    async def fanout(axis: str, connections: int, payload: int) -> dict[str, Any]:
        per = 10 if tiny else min(600, 300_000 // connections)
        result = await run_fanout(
            FanoutSpec("tidings", connections, per, payload=payload, client_procs=1 if tiny else 2)
        )
        return {
            **result,
            "scenario": "growth",
            "axis": axis,
            "kind": f"tidings {axis}={connections if axis == 'connections' else payload}",
        }

    async def recipients(n: int) -> dict[str, Any]:
        result = await scenarios.run_celebrity("sqlite", n)
        return {
            **result,
            "scenario": "growth",
            "axis": "recipients",
            "kind": f"sqlite recipients={n}",
            "rate": result["rows_per_second"],
        }

    async def inbox(url: str, rows: int, users: int) -> dict[str, Any]:
        from tidings.bench import inbox_growth
        from tidings.settings import Settings

        sized = {"block": 2_000, "reads": 100} if tiny else {}
        result = await inbox_growth.run_size(url=url, rows=rows, users=users, settings=Settings(), **sized)
        return {
            **result,
            "scenario": "growth",
            "axis": "inbox",
            "kind": f"postgresql inbox={rows}",
            "rate": result["fanout_rows_per_second"],
        }

    out: list[Job] = []
    for n in (10, 20) if tiny else (100, 1000, 5000):
        out.append((f"growth connections={n}", partial(fanout, "connections", n, 200)))
    for size in (64, 1000) if tiny else (64, 200, 1000, 4000):
        out.append((f"growth payload={size}", partial(fanout, "payload", 20 if tiny else 1000, size)))
    for n in (100, 1000) if tiny else (10_000, 100_000):
        out.append((f"growth recipients={n}", partial(recipients, n)))
    if postgres is not None:
        for rows in (2_000, 20_000) if tiny else (10_000, 100_000, 1_000_000, 10_000_000):
            out.append((f"growth inbox={rows}", partial(inbox, postgres, rows, 200 if tiny else 10_000)))
    return out


def machine() -> dict[str, Any]:
    def version(name: str) -> str:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return "-"

    node = (
        subprocess.run(["node", "--version"], capture_output=True, text=True, check=False).stdout.strip()
        if shutil.which("node")
        else "-"
    )
    with open("/proc/cpuinfo") as f:
        cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "?")
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "node": node,
        "versions": {
            n: version(n)
            for n in (
                "tidings",
                "uvicorn",
                "starlette",
                "websockets",
                "uvloop",
                "picows",
                "python-socketio",
                "orjson",
            )
        },
        "open_files_limit": __import__("resource").getrlimit(__import__("resource").RLIMIT_NOFILE)[0],
    }


async def run_all(args: argparse.Namespace) -> dict[str, Any]:
    names = args.scenarios or list(SCENARIOS)
    unknown = set(names) - set(SCENARIOS)
    if unknown:
        raise SystemExit(f"unknown scenarios: {', '.join(sorted(unknown))} (known: {', '.join(SCENARIOS)})")
    kinds = [k for k in args.kinds.split(",") if k]
    planned = jobs(names, args.size, kinds, args.postgres or POSTGRES)
    results: list[dict[str, Any]] = []
    header = {
        "started": time.time(),
        "size": args.size,
        "runs": args.runs,
        "machine": machine(),
        "command": sys.argv,
    }
    # Runs are interleaved (every job once, then again...): a change in the machine's load hits all alike.
    for run in range(args.runs):
        for label, job in planned:
            print(
                f"[bench] run {run + 1}/{args.runs}: {label} (load {os.getloadavg()[0]:.2f})",
                file=sys.stderr,
                flush=True,
            )
            try:
                result = await job()
            except Exception as exc:  # one broken scenario must not lose the others' results
                result = {
                    "scenario": label.split()[0],
                    "kind": " ".join(label.split()[1:]),
                    "ok": False,
                    "error": repr(exc),
                }
            result["run"] = run + 1
            result["job"] = label  # e.g. "scaleout x1": told apart from the plain fan-out of the same kind
            results.append(result)
            print(f"[bench] {orjson.dumps(result).decode()}", file=sys.stderr, flush=True)
            if args.out:  # after every job: an interrupted run keeps what it measured
                _save(args.out, {**header, "results": results})
    return {**header, "results": results}


def _save(path: str, data: dict[str, Any]) -> None:
    with open(path, "wb") as f:
        f.write(orjson.dumps(data, option=orjson.OPT_INDENT_2))
