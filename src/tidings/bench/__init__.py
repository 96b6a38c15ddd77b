"""The benchmark suite: ``tidings bench``.

``tidings bench run [SCENARIO ...] [--size tiny|full] [--runs N] [--out FILE]`` runs scenarios and writes
their structured results (JSON) plus a Markdown summary; ``tidings bench report FILE...`` renders saved
results (table and plot); ``TIDINGS_BENCH_PROFILE=DIR tidings bench run ...`` records py-spy stacks of every
server process and ``tidings bench profile DIR/*.txt`` summarises them. ``server``, ``clients``, ``stack``,
``producer``, ``celebrity``, ``sinks`` and ``sender`` are the roles of the child processes a run starts.
Every load is bounded in count and time and goes to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

import orjson

SCENARIOS = (
    "fanout",
    "scaleout",
    "connections",
    "latency",
    "ingest",
    "celebrity",
    "resume",
    "growth",
    "senders",
    "retention",
    "engines",
    "worker",
)


def main(argv: Sequence[str]) -> int:
    args = _parser().parse_args(list(argv))
    if not hasattr(args, "handler"):
        _parser().print_help()
        return 2
    result: int = args.handler(args)
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tidings bench", description="The Tidings benchmark suite.")
    sub = parser.add_subparsers(title="commands", metavar="{run,report,profile}")
    run = sub.add_parser("run", help="run scenarios; results as JSON and a Markdown table")
    run.add_argument(
        "scenarios", nargs="*", metavar="SCENARIO", help=f"any of {', '.join(SCENARIOS)} (default: all)"
    )
    run.add_argument("--size", choices=("tiny", "full"), default="full")
    run.add_argument("--runs", type=int, default=3, help="repetitions (medians and ranges are reported)")
    run.add_argument("--kinds", default="", help="comma-separated server kinds (fan-out); default: all")
    run.add_argument("--out", default="", help="write the results JSON here")
    run.add_argument("--postgres", default="", help="PostgreSQL URL for the celebrity fan-out")
    run.set_defaults(handler=_run)
    report = sub.add_parser("report", help="render saved results: Markdown table, and a PNG plot")
    report.add_argument("files", nargs="+")
    report.add_argument("--plot", default="", help="write the plot here (PNG)")
    report.add_argument("--scenario", action="append", default=[], help="only these scenarios in the table")
    report.set_defaults(handler=_report)
    profile = sub.add_parser(
        "profile", help="summarise py-spy stacks recorded with TIDINGS_BENCH_PROFILE=DIR"
    )
    profile.add_argument("files", nargs="+")
    profile.add_argument("--top", type=int, default=25)
    profile.add_argument("--within", action="append", default=[], help="only stacks through this function")
    profile.set_defaults(handler=_profile)
    server = sub.add_parser("server")
    server.add_argument("kind")
    server.add_argument("--port", type=int, default=0)
    server.add_argument("--data", default="")
    server.add_argument("--payload", type=int, default=200)
    server.add_argument("--reuse-port", action="store_true")
    server.set_defaults(handler=_server)
    stack = sub.add_parser("stack")
    stack.add_argument("--data", required=True)
    stack.add_argument("--roles", default="api,worker,gateway")
    stack.add_argument("--ws", choices=("fastws", "uvicorn"), default="fastws")
    stack.set_defaults(handler=_stack)
    producer = sub.add_parser("producer")
    producer.add_argument("spec", help="the producer's arguments, as JSON")
    producer.set_defaults(handler=_producer)
    celebrity = sub.add_parser("celebrity")
    celebrity.add_argument("spec", help="the celebrity run's arguments, as JSON")
    celebrity.set_defaults(handler=_celebrity)
    worker = sub.add_parser("worker-rows")
    worker.add_argument("spec", help="the worker measurement's arguments, as JSON")
    worker.set_defaults(handler=_worker_rows)
    sinks = sub.add_parser("sinks")
    sinks.add_argument("spec", help="unused ({})")
    sinks.set_defaults(handler=_sinks)
    sender = sub.add_parser("sender")
    sender.add_argument("spec", help="the senders measurement's arguments, as JSON")
    sender.set_defaults(handler=_sender)
    clients = sub.add_parser("clients")
    clients.add_argument("spec", help="the client process's arguments, as JSON")
    clients.set_defaults(handler=_clients)
    return parser


def _uvloop_run(coro: object) -> None:
    import uvloop

    uvloop.run(coro)  # type: ignore[arg-type]


def _server(args: argparse.Namespace) -> int:
    from tidings.bench.servers import serve

    _uvloop_run(serve(args.kind, args.port, args.data, args.payload, args.reuse_port))
    return 0


def _stack(args: argparse.Namespace) -> int:
    from tidings.bench.stack import serve_stack

    _uvloop_run(serve_stack(args.data, args.roles, args.ws))
    return 0


def _producer(args: argparse.Namespace) -> int:
    from tidings.bench.producer import run

    _uvloop_run(run(orjson.loads(args.spec)))
    return 0


def _celebrity(args: argparse.Namespace) -> int:
    from tidings.bench.celebrity import run

    _uvloop_run(run(orjson.loads(args.spec)))
    return 0


def _worker_rows(args: argparse.Namespace) -> int:
    from tidings.bench.worker_rows import run

    _uvloop_run(run(orjson.loads(args.spec)))
    return 0


def _sinks(args: argparse.Namespace) -> int:
    from tidings.bench.sinks import run

    _uvloop_run(run(orjson.loads(args.spec)))
    return 0


def _sender(args: argparse.Namespace) -> int:
    from tidings.bench.senders import run

    _uvloop_run(run(orjson.loads(args.spec)))
    return 0


def _clients(args: argparse.Namespace) -> int:
    from tidings.bench.clients import run

    _uvloop_run(run(orjson.loads(args.spec)))
    return 0


def _run(args: argparse.Namespace) -> int:
    from tidings.bench.runner import run_all

    results = asyncio.run(run_all(args))
    if args.out:
        with open(args.out, "wb") as f:
            f.write(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    from tidings.bench.report import markdown

    print(markdown(results))
    return 0 if all(r.get("ok", True) for r in results.get("results", [])) else 1


def _profile(args: argparse.Namespace) -> int:
    from tidings.bench.report import profile_summary

    for name in args.files:
        print(profile_summary(name, args.top, args.within), end="\n\n")
    return 0


def _report(args: argparse.Namespace) -> int:
    from tidings.bench.report import load, markdown, plot

    results = load(args.files)
    shown = [r for r in results["results"] if not args.scenario or r.get("scenario") in args.scenario]
    print(markdown({**results, "results": shown}))
    if args.plot:
        plot(results, args.plot)
    print(f"plot written to {args.plot}" if args.plot else "", file=sys.stderr)
    return 0
