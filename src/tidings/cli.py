"""The ``tidings`` command line. Flags mirror ``Settings``, as do ``TIDINGS_*`` variables."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from tidings import __version__
from tidings.errors import ConfigError, TidingsError
from tidings.settings import Settings


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:  # the suite parses its own arguments, --help included
        return _guarded(_bench, argv[1:])
    parser = _parser()
    args = parser.parse_args(_glue_ttl(argv))
    if not hasattr(args, "handler"):
        parser.print_help()
        return 2
    return _guarded(args.handler, args)


def _guarded(handler: Callable[[Any], int], arg: Any) -> int:
    """Run a command; a ``TidingsError`` ends it with one line on stderr (what to fix), never a traceback.
    Any other error ends it with one line too (its kind and message) and a pointer to ``--debug``, which
    (or ``TIDINGS_DEBUG=1``) lets every error out with its traceback."""
    debug = bool(getattr(arg, "debug", False)) or os.environ.get("TIDINGS_DEBUG", "") in ("1", "true")
    try:
        result: int = handler(arg)
    except KeyboardInterrupt:
        return 130
    except TidingsError as exc:
        if debug:
            raise
        print(f"tidings: {exc.message}", file=sys.stderr)
        return 1
    except Exception as exc:
        if debug:
            raise
        print(
            f"tidings: unexpected {type(exc).__name__}: {exc} (run again with --debug for the traceback)",
            file=sys.stderr,
        )
        return 1
    return result


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: X)`` after a flag's help, except where the default is None or False: those flags
    fall back to a ``TIDINGS_*`` variable or a setting, and their help says which default applies."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False or action.default is argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)


def _default(name: str) -> object:
    """The default of a ``Settings`` field (what a flag left unset ends up as, without a TIDINGS_* variable)."""
    return Settings.__dataclass_fields__[name].default


ENV_NOTE = "Every flag mirrors a TIDINGS_<NAME> environment variable (src/tidings/settings.py); a flag wins."

# What each role command serves; a flag appears only on the commands that use it.
_ROLE_COMMANDS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    (
        "serve",
        ("api", "worker", "gateway", "sender"),
        "everything in one process (embedded backends by default)",
    ),
    ("api", ("api",), "the producer and user HTTP API only"),
    ("worker", ("worker",), "the fan-out worker only (serves /healthz and /readyz on --port)"),
    ("gateway", ("gateway",), "the WebSocket/SSE gateway only"),
    ("sender", ("sender",), "the offline senders only: web push, email, webhooks, mobile push"),
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tidings",
        description="Real-time notifications for social products.",
        epilog=ENV_NOTE,
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"tidings {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    for name, roles, text in _ROLE_COMMANDS:
        sub = commands.add_parser(
            name, help=text, description=f"Run {text}.", epilog=ENV_NOTE, formatter_class=_HelpFormatter
        )
        _role_flags(sub, roles)
        # /metrics: on the main listener for the one-process local command, on its own port for the roles.
        sub.set_defaults(handler=_run_roles, roles=roles, metrics_default=-1 if name == "serve" else 0)
    _apps_parser(commands)
    _deliveries_commands(commands)
    token = commands.add_parser(
        "token",
        help="mint a user token (for trying things out)",
        description="Print a user JWT signed with the app's jwt_secret (your backend does this in production).",
        formatter_class=_HelpFormatter,
    )
    token.add_argument("--app", required=True, help="the app (tenant) the user belongs to")
    token.add_argument("--user", required=True, help="the user id (the token's sub claim)")
    token.add_argument(
        "--ttl",
        type=duration,
        default="1h",
        help="lifetime: seconds, or a number with s, m, h or d (30m, 7d)",
    )
    _backend_flags(token)
    token.set_defaults(handler=_token)
    # Its arguments are the suite's own (``tidings bench --help``): ``main`` hands them over unparsed.
    commands.add_parser("bench", help="the benchmark suite (tidings bench --help)", add_help=False)
    from tidings.plan import command as plan_command

    plan = commands.add_parser(
        "plan",
        help="capacity plan from the benchmarks",
        description=plan_command.DESCRIPTION,
        formatter_class=_HelpFormatter,
    )
    plan_command.add_arguments(plan)
    plan.set_defaults(handler=_plan)
    _verify_parser(commands)
    return parser


def _verify_parser(commands: Any) -> None:
    from tidings.verify import command as verify_command

    verify = commands.add_parser(
        "verify",
        help="prove a deployment loses nothing (a bounded ledger run)",
        description=verify_command.DESCRIPTION,
        formatter_class=_HelpFormatter,
    )
    verify_command.add_arguments(verify)
    verify.set_defaults(handler=_verify)


def _verify(args: argparse.Namespace) -> int:
    from tidings.verify.command import run

    return run(args)


def _plan(args: argparse.Namespace) -> int:
    from tidings.plan.command import run

    return run(args)


def _role_flags(sub: argparse.ArgumentParser, roles: tuple[str, ...]) -> None:
    _backend_flags(sub)
    sub.add_argument("--host", default=None, help=f"interface to listen on (default: {_default('host')})")
    sub.add_argument(
        "--port", type=int, default=None, help=f"HTTP port to listen on (default: {_default('port')})"
    )
    sub.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="where GET /metrics is served: -1 on --port, 0 on --port + 1000, N on port N "
        "(default: -1 for serve, 0 for the role commands)",
    )
    if "gateway" in roles:
        sub.add_argument(
            "--ws-server",
            choices=("fastws", "uvicorn"),
            default=None,
            help="the WebSocket server on --port: fastws, the fast listener, or uvicorn's ASGI shell (the "
            f"fallback) (default: {_default('ws_server')})",
        )
        sub.add_argument(
            "--ws-port",
            type=int,
            default=None,
            help="also serve fastws on a port of its own (default: 0, none: WebSocket is on --port)",
        )
    if "api" in roles:
        sub.add_argument(
            "--demo",
            action="store_true",
            default=None,
            help="serve the demo app at /demo: anyone who can reach the server acts as any demo user; "
            "local use only (default: off)",
        )
    sub.add_argument(
        "--log-format",
        choices=("auto", "json", "console"),
        default="auto",
        help="log lines as JSON or for humans; auto: for humans when stderr is a terminal, JSON otherwise",
    )


def _apps_parser(commands: Any) -> None:
    from tidings.app_commands import add_apps_commands  # create, list, rotate-key, rotate-secret, delete

    add_apps_commands(commands)


def _print_help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _glue_ttl(argv: list[str]) -> list[str]:
    """``--ttl -5m`` as ``--ttl=-5m``: argparse would take ``-5m`` for a flag and say only "expected one
    argument"; glued, the value reaches ``duration``, which says what is wrong with it."""
    out: list[str] = []
    for arg in argv:
        if out and out[-1] == "--ttl" and arg.startswith("-"):
            out[-1] = f"--ttl={arg}"
        else:
            out.append(arg)
    return out


_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def duration(text: str) -> float:
    """Seconds from ``90``, ``90s``, ``30m``, ``1h`` or ``7d``; more than zero (an argparse ``type``)."""
    raw = text.strip().lower()
    unit = _UNITS.get(raw[-1:]) if raw else None
    number = raw[:-1] if unit is not None else raw
    try:
        seconds = float(number) * (unit or 1.0)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration: give seconds or a number with s, m, h or d (90, 30m, 1h, 7d)"
        ) from None
    if not seconds > 0 or seconds == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: a token's lifetime must be more than zero")
    return seconds


def _bench(args: list[str]) -> int:
    try:
        from tidings.bench import main as bench_main
    except ImportError as exc:
        raise ConfigError(
            f"the benchmark suite needs its extra: pip install 'tidings[bench]' ({exc})"
        ) from exc
    return bench_main(args)


def _backend_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data", default=None, help=f"data directory of the embedded backends (default: {_default('data')})"
    )
    parser.add_argument(
        "--store",
        default=None,
        help="store URL: sqlite:///path or postgresql://... (default: SQLite in --data)",
    )
    parser.add_argument(
        "--broker",
        default=None,
        help=f"broker URL: memory://, nats://, redis://, amqp:// or kafka:// (default: {_default('broker')})",
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        help="show the traceback of an error instead of one line (or TIDINGS_DEBUG=1) (default: off)",
    )


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
        metrics_port=_metrics_port(args),
    )


def _metrics_port(args: argparse.Namespace) -> int | None:
    """The flag, else None when TIDINGS_METRICS_PORT(_FILE) is set (the variable applies), else the command's
    default (``metrics_default``: -1 for serve, 0 for the role commands; None for commands that serve nothing)."""
    flag: int | None = getattr(args, "metrics_port", None)
    if flag is not None:
        return flag
    if any(name in os.environ for name in ("TIDINGS_METRICS_PORT", "TIDINGS_METRICS_PORT_FILE")):
        return None
    default: int | None = getattr(args, "metrics_default", None)
    return default


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
    _check_port_free(settings.host, settings.port)
    if settings.metrics_listen_port is not None:
        _check_port_free(settings.host, settings.metrics_listen_port, flag="--metrics-port")
    if settings.ws_port and "gateway" in args.roles and settings.ws_server == "fastws":
        _check_port_free(settings.host, settings.ws_port, flag="--ws-port")
    configure(json=_json_logs(args.log_format))

    def announce() -> None:
        # A plain block on stdout (logs go to stderr): readable whatever the log format.
        print(banner(settings, args.roles), flush=True)

    async def go() -> int:
        _tune_gc()
        await Service(settings, roles=args.roles).run(on_ready=announce)
        return 0

    return _run(go)


def _json_logs(log_format: str) -> bool:
    """``auto``: lines for humans on a terminal, JSON for collectors (a pipe, a file, a container log)."""
    if log_format == "auto":
        return not sys.stderr.isatty()
    return log_format == "json"


def _check_port_free(host: str, port: int, flag: str = "--port") -> None:
    """Fail fast with one line when the HTTP port is taken, instead of uvicorn's log line and exit after the
    backends were opened. Binds as uvicorn will (SO_REUSEADDR), then lets go at once."""
    import errno
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(
                    f"port {port} on {host} is already in use: pick another with {flag} N "
                    f"(or TIDINGS_{flag[2:].replace('-', '_').upper()}=N)"
                ) from None
            if exc.errno == errno.EACCES:
                raise ConfigError(
                    f"port {port} needs privileges: pick one above 1023 with {flag} N"
                ) from None
            raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def banner(settings: Settings, roles: Sequence[str]) -> str:
    """What this process serves, one URL a line. ``/admin`` is listed as usable only while admin routes are on."""
    base = f"http://{settings.host}:{settings.port}"
    lines = [f"Tidings {__version__} ({', '.join(roles)}) on {settings.store_url.split('?')[0]}"]
    if "api" in roles:
        lines += [f"  home      {base}/", f"  API       {base}/v1/events", f"  API docs  {base}/docs"]
        if settings.demo:
            lines.append(f"  demo      {base}/demo")
    if "gateway" in roles:
        lines += [f"  WebSocket ws://{settings.host}:{settings.port}/v1/ws", f"  SSE       {base}/v1/stream"]
    if settings.admin_token:
        lines.append(f"  admin     {base}/admin")
    else:
        lines.append("  admin     off (start with TIDINGS_ADMIN_TOKEN=<a secret> to turn on /admin)")
    metrics_port = settings.metrics_listen_port
    scrape = base if metrics_port is None else f"http://{settings.host}:{metrics_port}"
    lines += [f"  metrics   {scrape}/metrics", f"  health    {base}/healthz  {base}/readyz"]
    return "\n".join(lines)


def _deliveries_commands(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "deliveries",
        help="offline deliveries: dead letters",
        description="Offline deliveries that ran out of tries (dead letters): list them, send them again.",
        formatter_class=_HelpFormatter,
    )
    parser.set_defaults(handler=lambda _args: _print_help(parser))
    deliveries = parser.add_subparsers(title="deliveries commands", metavar="COMMAND")
    dead = deliveries.add_parser(
        "dead",
        help="list dead deliveries and dead fan-out events as JSON lines",
        formatter_class=_HelpFormatter,
    )
    dead.add_argument("--app", default=None, help="only this app's (default: every app)")
    dead.add_argument("--limit", type=int, default=100, help="at most this many of each kind")
    _backend_flags(dead)
    dead.set_defaults(handler=_deliveries_dead)
    retry = deliveries.add_parser(
        "retry", help="send dead deliveries again (fresh attempts)", formatter_class=_HelpFormatter
    )
    retry.add_argument("ids", nargs="*", type=int, help="delivery ids (from `tidings deliveries dead`)")
    retry.add_argument("--all", action="store_true", help="every dead delivery (default: only the ids given)")
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
