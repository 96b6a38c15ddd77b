"""The ``tidings`` command line Flags mirror ``Settings``, as do ``TIDINGS_*`` variables."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from tidings import __version__
from tidings.errors import ConfigError, TidingsError
from tidings.settings import Settings


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        parser.print_help()
        return 2
    try:
        result: int = args.handler(args)
    except TidingsError as exc:
        print(f"tidings: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tidings", description="Real-time notifications for social products."
    )
    parser.add_argument("--version", action="version", version=f"tidings {__version__}")
    commands = parser.add_subparsers(title="commands")
    for name, roles, text in (
        (
            "serve",
            ("api", "worker", "gateway", "sender"),
            "everything in one process (embedded backends by default)",
        ),
        ("api", ("api",), "the producer and user HTTP API only"),
        ("worker", ("worker",), "the fan-out worker only"),
        ("gateway", ("gateway",), "the WebSocket/SSE gateway only"),
        ("sender", ("sender",), "the offline senders only (web push, email, webhooks, mobile push)"),
    ):
        sub = commands.add_parser(name, help=text)
        _backend_flags(sub)
        sub.add_argument("--host", default=None)
        sub.add_argument("--port", type=int, default=None)
        sub.add_argument(
            "--ws-server", choices=("fastws", "uvicorn"), default=None, help="the WebSocket server"
        )
        sub.add_argument("--ws-port", type=int, default=None, help="fastws port (default: --port + 1)")
        sub.add_argument("--log-format", choices=("json", "console"), default="json")
        sub.add_argument("--demo", action="store_true", default=None, help="serve the demo app's endpoints")
        sub.set_defaults(handler=_run_roles, roles=roles)
    apps = commands.add_parser("apps", help="manage apps (tenants)").add_subparsers(title="apps commands")
    create = apps.add_parser("create", help="create an app; prints its api_key and jwt_secret as JSON")
    create.add_argument("name")
    create.add_argument(
        "--origin", action="append", default=[], help="an allowed browser origin (repeatable)"
    )
    _backend_flags(create)
    create.set_defaults(handler=_apps_create)
    _deliveries_commands(commands)
    token = commands.add_parser("token", help="mint a user token (for trying things out)")
    token.add_argument("--app", required=True)
    token.add_argument("--user", required=True)
    token.add_argument("--ttl", type=float, default=3600.0)
    _backend_flags(token)
    token.set_defaults(handler=_token)
    bench = commands.add_parser("bench", help="the benchmark suite (tidings bench --help)", add_help=False)
    bench.add_argument("args", nargs=argparse.REMAINDER)
    bench.set_defaults(handler=_bench)
    from tidings.plan import command as plan_command

    plan = commands.add_parser(
        "plan", help="capacity plan from the benchmarks", description=plan_command.DESCRIPTION
    )
    plan_command.add_arguments(plan)
    plan.set_defaults(handler=_plan)
    return parser


def _plan(args: argparse.Namespace) -> int:
    from tidings.plan.command import run

    return run(args)


def _bench(args: argparse.Namespace) -> int:
    try:
        from tidings.bench import main as bench_main
    except ImportError as exc:
        raise ConfigError(
            f"the benchmark suite needs its extra: pip install 'tidings[bench]' ({exc})"
        ) from exc
    return bench_main(list(args.args))


def _backend_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", default=None, help="data directory for embedded backends (./tidings-data)")
    parser.add_argument("--store", default=None, help="store URL: sqlite:///path or postgresql://...")
    parser.add_argument("--broker", default=None, help="broker URL: memory://, nats://, redis://, amqp://")


def _settings(args: argparse.Namespace) -> Settings:
    return Settings.from_env(
        data=args.data,
        store=args.store,
        broker=args.broker,
        host=getattr(args, "host", None),
        demo=getattr(args, "demo", None),
        port=getattr(args, "port", None),
        ws_server=getattr(args, "ws_server", None),
        ws_port=getattr(args, "ws_port", None),
    )


def _tune_gc() -> None:
    """A long-lived server: what start-up made is kept out of the cyclic GC's sight, and the young generation
    is collected every 50,000 allocations instead of 700 (docs/performance.md: +21% gateway throughput)."""
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def _run(coro: Callable[[], Coroutine[Any, Any, int]]) -> int:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency except on Windows
        return asyncio.run(coro())
    return uvloop.run(coro())


def _run_roles(args: argparse.Namespace) -> int:
    from tidings.observability.logging import configure
    from tidings.service import Service

    settings = _settings(args)
    configure(json=args.log_format == "json")

    def announce() -> None:
        base = f"http://{settings.host}:{settings.port}"
        lines = [f"Tidings {__version__} ({', '.join(args.roles)}) on {settings.store_url.split('?')[0]}"]
        if "api" in args.roles:
            lines += [f"  API       {base}/v1/events", f"  API docs  {base}/docs", f"  demo      {base}/demo"]
        if "gateway" in args.roles:
            ws_port = (
                settings.ws_port or settings.port + 1 if settings.ws_server == "fastws" else settings.port
            )
            lines += [f"  WebSocket ws://{settings.host}:{ws_port}/v1/ws", f"  SSE       {base}/v1/stream"]
        lines += [f"  admin     {base}/admin", f"  metrics   {base}/metrics"]
        lines += [f"  health    {base}/healthz  {base}/readyz"]
        print("\n".join(lines), flush=True)

    async def go() -> int:
        _tune_gc()
        await Service(settings, roles=args.roles).run(on_ready=announce)
        return 0

    return _run(go)


def _apps_create(args: argparse.Namespace) -> int:
    from tidings.auth import create_app_record
    from tidings.backends import open_store

    settings = _settings(args)

    async def go() -> int:
        store = await open_store(settings.store_url, settings)
        try:
            record = await create_app_record(store, args.name, list(args.origin), time.time())
        finally:
            await store.close()
        print(json.dumps(record))
        return 0

    return _run(go)


def _deliveries_commands(commands: Any) -> None:
    deliveries = commands.add_parser("deliveries", help="offline deliveries: dead letters").add_subparsers(
        title="deliveries commands"
    )
    dead = deliveries.add_parser("dead", help="list dead deliveries and dead fan-out events as JSON lines")
    dead.add_argument("--app", default=None)
    dead.add_argument("--limit", type=int, default=100)
    _backend_flags(dead)
    dead.set_defaults(handler=_deliveries_dead)
    retry = deliveries.add_parser("retry", help="send dead deliveries again (fresh attempts)")
    retry.add_argument("ids", nargs="*", type=int, help="delivery ids (from `tidings deliveries dead`)")
    retry.add_argument("--all", action="store_true", help="every dead delivery")
    _backend_flags(retry)
    retry.set_defaults(handler=_deliveries_retry)


def _deliveries_dead(args: argparse.Namespace) -> int:
    from tidings.backends import open_store

    settings = _settings(args)

    async def go() -> int:
        store = await open_store(settings.store_url, settings)
        try:
            rows, events = await store.outbound.dead(args.app, args.limit)
        finally:
            await store.close()
        for r in rows:
            print(
                json.dumps(
                    {
                        "kind": "delivery",
                        "id": r.id,
                        "app": r.app,
                        "user": r.user,
                        "seq": r.seq,
                        "channel": r.channel,
                        "target": r.target,
                        "event_id": r.event_id,
                        "attempts": r.attempts,
                        "error": r.last_error,
                        "at": r.updated_at,
                    }
                )
            )
        for e in events:
            print(
                json.dumps(
                    {
                        "kind": "event",
                        "id": e.id,
                        "app": e.app,
                        "event_id": e.event_id,
                        "error": e.error,
                        "at": e.at,
                    }
                )
            )
        return 0

    return _run(go)


def _deliveries_retry(args: argparse.Namespace) -> int:
    from tidings.backends import open_store

    if bool(args.ids) == bool(args.all):
        raise ConfigError("give delivery ids or --all")
    settings = _settings(args)

    async def go() -> int:
        store = await open_store(settings.store_url, settings)
        try:
            count = await store.outbound.retry_dead(None if args.all else list(args.ids), time.time())
        finally:
            await store.close()
        print(json.dumps({"retried": count}))
        return 0

    return _run(go)


def _token(args: argparse.Namespace) -> int:
    from tidings.auth import mint_user_token
    from tidings.backends import open_store
    from tidings.errors import NotFoundError

    settings = _settings(args)

    async def go() -> int:
        store = await open_store(settings.store_url, settings)
        try:
            app = await store.apps.get(args.app)
        finally:
            await store.close()
        if app is None:
            raise NotFoundError(f"no app named {args.app!r}")
        print(mint_user_token(app, args.user, args.ttl, time.time()))
        return 0

    return _run(go)
