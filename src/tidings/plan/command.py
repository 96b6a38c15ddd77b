"""``tidings plan [--bench FILE] [WORKLOAD.yaml] [--json]``: the command line of the capacity planner."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

from tidings.errors import TidingsError
from tidings.plan.bench import load_units
from tidings.plan.capacity import plan
from tidings.plan.costs import Prices, monthly, parse_price_flags
from tidings.plan.document import load_document
from tidings.plan.render import as_json, as_table
from tidings.plan.units import DEFAULT_UNITS
from tidings.plan.workload import Workload


def shares(text: str) -> dict[str, str]:
    """``1=0.9,5=0.1`` -> ``{"1": "0.9", "5": "0.1"}`` (the workload checks and converts the values)."""
    pairs = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise argparse.ArgumentTypeError(f"{item!r}: write count=share pairs, e.g. 1=0.9,5=0.1")
        pairs[key.strip()] = value.strip()
    return pairs


_FLAGS: dict[str, tuple[Callable[[str], object], str]] = {
    "daily_users": (int, "daily active users"),
    "peak_concurrent_share": (float, "share of daily users connected at the peak (0.1)"),
    "peak_to_average": (float, "the busiest hour's event rate over the day's average (3)"),
    "events_per_user_per_day": (float, "direct events a daily user causes (5)"),
    "posts_per_user_per_day": (float, "posts to followers a daily user makes (0.05)"),
    "recipients": (shares, "direct events by recipient count, e.g. 1=0.9,5=0.09,50=0.01"),
    "followers": (
        shares,
        "posts by follower count, celebrities included, e.g. 50=0.99,10000=0.0099,1000000=0.0001",
    ),
    "channels": (shares, "share of rows also decided for an offline channel, e.g. web_push=0.3,email=0.02"),
    "retention_days": (int, "days inbox rows are kept (30)"),
    "ws_server": (str, "fastws or uvicorn (fastws)"),
}


DESCRIPTION = (
    "Capacity plan for a workload: processes per role, PostgreSQL, broker, bandwidth and a monthly "
    "cost, from the unit costs `tidings bench` measured (bench/results/final; --bench for your own run). "
    "The workload is YAML (a small subset without PyYAML) or JSON; flags override its keys."
)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tidings plan", description=DESCRIPTION)
    add_arguments(p)
    return p


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The plan's arguments on ``p`` (its own parser, or the ``plan`` subcommand of ``tidings``)."""
    p.add_argument("workload", nargs="?", help="a workload file (.yaml or .json); see docs/workloads/")
    p.add_argument(
        "--bench",
        action="append",
        default=[],
        metavar="FILE",
        help="a `tidings bench` result file (repeatable: runs are pooled; default: the shipped unit costs)",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table (default: a table)")
    p.add_argument(
        "--price",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override one price (default: the shipped price table)",
    )
    for name, (kind, text) in _FLAGS.items():
        help_text = f"{text}; default: the workload file's value, else the built-in default"
        p.add_argument(
            f"--{name.replace('_', '-')}", type=kind, default=None, help=help_text, metavar="VALUE"
        )


def main(argv: Sequence[str] | None = None) -> int:
    return run(parser().parse_args(argv))


def run(args: argparse.Namespace) -> int:
    data = load_document(args.workload) if args.workload else {}
    workload = Workload.from_mapping(data, **{name: getattr(args, name) for name in _FLAGS})
    units = load_units(args.bench, DEFAULT_UNITS)
    prices_in = data.get("prices") or {}
    if not isinstance(prices_in, dict):
        raise TidingsError("prices: a mapping of name to value")
    prices = Prices.from_mapping({**prices_in, **parse_price_flags(args.price)})
    capacity = plan(workload, units)
    costs = monthly(capacity, prices)
    print(as_json(capacity, costs, prices) if args.json else as_table(capacity, costs))
    return 0
