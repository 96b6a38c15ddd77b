"""``tidings verify URL --app NAME --api-key K --jwt-secret S``: the command line of the no-loss check.

Exit codes: 0 when every accepted event reached every recipient's inbox and live clients exactly once, in
order; 1 when something was lost, duplicated, left a gap or came out of order, or the run could not send its
events within ``--timeout``; 2 for a usage error (argparse) or a run that could not start.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from tidings.errors import ConfigError
from tidings.verify.ledger import Report
from tidings.verify.run import Options, Verify

DESCRIPTION = (
    "Prove a deployment keeps its delivery promise: send a bounded ledger of events (idempotent retries) "
    "to users of the run's own, follow them with live clients that drop and resume over WebSocket and SSE, "
    "optionally run a fault command at intervals, then report lost, duplicated, gaps, out-of-order and "
    "latency. Exit 1 on any loss, duplicate, gap or disorder."
)


def _positive(kind: type[int] | type[float]) -> Any:
    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text!r}: must be more than 0")
        return value

    return parse


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The verify arguments on ``p`` (the ``verify`` subcommand of ``tidings``)."""
    p.add_argument("url", help="the deployment's base URL, e.g. https://notify.example.com")
    p.add_argument("--app", required=True, help="the app (tenant) to send as")
    p.add_argument("--api-key", required=True, help="the app's API key (tidings apps create prints it)")
    p.add_argument("--jwt-secret", required=True, help="the app's JWT secret, to mint the run's user tokens")
    p.add_argument("--events", type=_positive(int), default=1000, help="events to send")
    p.add_argument("--users", type=_positive(int), default=10, help="users of the run's own (1-3 per event)")
    p.add_argument(
        "--clients", type=_positive(int), default=4, help="live clients, WebSocket and SSE by turns"
    )
    p.add_argument("--producers", type=_positive(int), default=4, help="producers sending concurrently")
    p.add_argument(
        "--rate", type=_positive(float), help="events per second in all (default: as fast as taken)"
    )
    p.add_argument(
        "--kill-cmd", help="a shell command run at intervals while events are sent (a fault; default: none)"
    )
    p.add_argument("--kill-every", type=_positive(float), default=5.0, help="seconds between fault commands")
    p.add_argument(
        "--max-faults",
        type=_positive(int),
        help="run the fault command at most this many times (default: no limit)",
    )
    p.add_argument("--timeout", type=_positive(float), default=300.0, help="seconds the whole run may take")
    p.add_argument("--drops", type=int, default=3, help="connection drops per client, at random points")
    p.add_argument("--seed", type=int, help="seed of the recipients and drops (default: random)")
    p.add_argument(
        "--several-workers",
        action="store_true",
        help="a producer's order in an inbox is reported (reordered), not failed: for a deployment of a "
        "release before ordering keys with several fan-out workers (each producer's events carry one ordering "
        "key, whose order the contract keeps with any number of workers; default: failed)",
    )
    p.add_argument(
        "--json", action="store_true", help="print the report as one JSON object (default: a table)"
    )


def run(args: argparse.Namespace) -> int:
    options = Options(
        url=args.url.rstrip("/"),
        app=args.app,
        api_key=args.api_key,
        jwt_secret=args.jwt_secret,
        events=args.events,
        users=args.users,
        clients=args.clients,
        producers=min(args.producers, args.events),
        kill_cmd=args.kill_cmd,
        rate=args.rate,
        lane_order=not args.several_workers,
        kill_every=args.kill_every,
        max_faults=args.max_faults,
        timeout=args.timeout,
        drops=max(0, args.drops),
        seed=args.seed,
    )
    try:
        report = asyncio.run(Verify(options).run())
    except ConfigError as error:  # the run could not start: credentials refused
        print(f"tidings verify: {error.message}", file=sys.stderr)
        return 2
    print(json.dumps(report.as_dict()) if args.json else render(report))
    sys.stdout.flush()
    return 0 if report.ok else 1


def render(report: Report) -> str:
    """The report for a terminal: the figures, then up to 20 named examples of each kind of failure."""
    lines = [
        f"tidings verify: {report.events} events accepted, {report.deliveries} deliveries to "
        f"{report.users} users, {report.clients} live clients ({report.resumes} resumes), "
        f"{report.faults} faults injected",
    ]
    for kind in Report.KINDS:
        lines.append(f"  {kind.replace('_', ' '):<14}{report.counts[kind]}")
    if report.latency_ms:
        figures = "  ".join(f"{k} {v:.0f}" for k, v in report.latency_ms.items() if k != "count")
        lines.append(f"  latency ms    {figures}  (2xx to live receipt)")
    if report.recovery_s:
        lines.append("  recovery s    " + " ".join(f"{s:.1f}" for s in report.recovery_s))
    if report.reordered:
        lines.append(
            f"  reordered     {report.reordered} lanes across workers (not promised: --several-workers)"
        )
    if report.unconfirmed:
        lines.append(
            f"  unconfirmed   {report.unconfirmed} rows of events whose 2xx was lost (not a failure)"
        )
    for kind in Report.KINDS:
        lines += [f"{kind.replace('_', ' ')}: {line}" for line in getattr(report, kind)]
    if report.incomplete:
        lines.append(f"incomplete: {report.incomplete}")
    lines.append("OK: nothing lost, duplicated, skipped or reordered" if report.ok else "FAILED")
    return "\n".join(lines)
