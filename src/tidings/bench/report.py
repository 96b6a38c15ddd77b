"""Results -> a Markdown table (median and range of the runs, per scenario and kind) and a PNG plot."""

from __future__ import annotations

import gzip
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from tidings.bench.harness import median

# The headline number of each scenario, and its unit.
METRIC = {
    "fanout": ("rate", "deliveries/s"),
    "connections": ("bytes_per_connection", "bytes/conn"),
    "latency": ("p99_ms", "p99 ms"),
    "ingest": ("rate", "events/s"),
    "celebrity": ("seconds", "s"),
    "resume": ("seconds", "s"),
    "growth": ("rate", "deliveries/s (recipients: rows/s)"),
    "senders": ("rate", "sends/s"),
    "retention": ("swept_rows_per_second_during_fanout", "rows swept/s during a fan-out"),
    "engines": ("append_rate", "events appended/s"),
    "worker": ("rows_per_cpu_second", "inbox rows/worker CPU-s"),
}


def load(files: Sequence[str]) -> dict[str, Any]:
    merged: dict[str, Any] = {"results": []}
    for name in files:
        data = orjson.loads(Path(name).read_bytes())
        merged.setdefault("machine", data.get("machine"))
        merged["results"].extend(data["results"])
    return merged


def group_key(result: dict[str, Any]) -> tuple[str, str]:
    kind = str(result.get("kind", ""))
    if result.get("scenario") == "fanout" and result.get("servers", 1) > 1:
        kind += f" x{result['servers']}"
    if result.get("scenario") == "connections":
        kind += f" @{result.get('connections')}"
    if result.get("scenario") == "latency":
        kind += f" @{result.get('rate')}/s"
    if result.get("scenario") == "ingest":
        kind += f" x{result.get('batch')}" if result.get("batch") else ""
    return str(result.get("scenario")), kind


def summary(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (scenario, kind): median and range of the headline metric over successful runs."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for result in results:
        groups[group_key(result)].append(result)
    rows = []
    for (scenario, kind), runs in groups.items():
        field, unit = METRIC.get(scenario, ("", ""))
        values = [
            float(r[field]) for r in runs if r.get("ok", True) and field in r and r.get("complete", True)
        ]
        rows.append(
            {
                "scenario": scenario,
                "kind": kind,
                "unit": unit,
                "runs": len(runs),
                "ok_runs": len(values),
                "median": median(values) if values else None,
                "low": min(values, default=None),
                "high": max(values, default=None),
                "load": [r.get("load") for r in runs],
                "client_bound": any(r.get("client_bound") for r in runs),
                "extra": _extra(scenario, runs),
            }
        )
    return rows


def _extra(scenario: str, runs: list[dict[str, Any]]) -> str:
    ok = [r for r in runs if r.get("ok", True)]
    if not ok:
        return "; ".join(sorted({str(r.get("error", "failed"))[:80] for r in runs}))
    if scenario == "fanout":
        per_cpu = [r["rate"] / r["server_cpu"] for r in ok if r.get("server_cpu")]
        text = (
            f"{median(per_cpu):,.0f}/CPU-s, server CPU {median([r['server_cpu'] for r in ok]):.2f}"
            if per_cpu
            else ""
        )
        writes = [r["frames_per_write"] for r in ok if "frames_per_write" in r]
        return text + (f", {median(writes):.1f} frames/write" if writes else "")
    if scenario == "latency":
        return "p50 {:.1f} / p999 {:.1f} ms at {:,.0f} ev/s".format(
            median([r["p50_ms"] for r in ok]),
            median([r["p999_ms"] for r in ok]),
            median([r["achieved_rate"] for r in ok]),
        )
    if scenario == "connections":
        return f"{min(r['held'] for r in ok):,} held, RSS {median([r['server_rss_mb'] for r in ok]):.0f} MB"
    if scenario == "senders":

        def mid(field: str) -> float:
            return median([float(r[field]) for r in ok])

        return (
            f"{mid('cpu_us'):,.0f} CPU-µs/send; library call {mid('library_rate'):,.0f}/s, "
            f"{mid('library_cpu_us'):,.0f} CPU-µs; own work {mid('own_ratio'):.0%} of the library's"
        )
    if scenario == "worker":
        return "raw insert {:,.0f} rows/CPU-s; ratio {:.2f}; {:.1f} µs/row".format(
            median([r["raw_rows_per_cpu_second"] for r in ok]),
            median([r["ratio"] for r in ok]),
            median([r["us_per_row"] for r in ok]),
        )
    if scenario == "celebrity":
        return f"{median([r['rows_per_second'] for r in ok]):,.0f} rows/s"
    if scenario == "retention":
        return "{:,} rows; fan-out slowdown x{:.2f}; {:,.0f} rows swept/s alone".format(
            ok[0]["rows"],
            median([r["fanout_slowdown"] for r in ok]),
            median([r["swept_rows_per_second_alone"] for r in ok]),
        )
    if scenario == "engines":
        return f"read and acked {median([r['read_rate'] for r in ok]):,.0f}/s"
    if scenario == "ingest" and all("server_cpu_us" in r for r in ok):
        return "server CPU {:.2f}, {:.1f} µs per event; producer CPU {:.2f}".format(
            median([r["server_cpu"] for r in ok]),
            median([r["server_cpu_us"] for r in ok]),
            median([r["client_cpu_max"] for r in ok]),
        )
    if scenario in ("ingest", "resume") and any("server_cpu" in r for r in ok):
        return f"server CPU {median([r.get('server_cpu', 0.0) for r in ok]):.2f}"
    return ""


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.2f}"


def markdown(data: dict[str, Any]) -> str:
    rows = summary(data["results"])
    lines = [
        "| scenario | kind | median | range | unit | runs ok | load (1-min avg) | notes |",
        "|---|---|---:|---|---|---|---|---|",
    ]
    for row in rows:
        loads = ", ".join(f"{x:.1f}" for x in row["load"] if x is not None)
        note = row["extra"] + ("; CLIENT-BOUND in a run" if row["client_bound"] else "")
        lines.append(
            f"| {row['scenario']} | {row['kind']} | {_fmt(row['median'])} | {_fmt(row['low'])}..{_fmt(row['high'])} "
            f"| {row['unit']} | {row['ok_runs']}/{row['runs']} | {loads} | {note} |"
        )
    lines += ["", *ratios(rows), *scaleout(data["results"])]
    return "\n".join(lines)


def scaleout(results: list[dict[str, Any]]) -> list[str]:
    """Two gateway processes on one port over one, pairing the runs of the ``scaleout`` jobs."""
    rates: dict[int, dict[int, float]] = defaultdict(dict)
    for result in results:
        if str(result.get("job", "")).startswith("scaleout") and result.get("complete"):
            rates[result["run"]][result["servers"]] = result["rate"]
    pairs = [r[2] / r[1] for r in rates.values() if r.get(1) and r.get(2)]
    if not pairs:
        return []
    each = ", ".join(f"{p:.2f}" for p in pairs)
    return [f"- two gateway processes / one (scaleout, per run): median {median(pairs):.2f}x ({each})"]


def ratios(rows: list[dict[str, Any]]) -> list[str]:
    """The gateway's fan-out rate over each baseline's, from the medians of the same run set."""
    fanout = {r["kind"]: r["median"] for r in rows if r["scenario"] == "fanout" and r["median"]}
    ours = fanout.get("tidings")
    if not ours:
        return []
    return [f"- tidings / {kind}: {ours / value:.2f}x" for kind, value in fanout.items() if kind != "tidings"]


def plot(data: dict[str, Any], path: str) -> None:
    """Fan-out per kind (rate and rate per server CPU-second), and how the gateway's and the fan-out's rates
    move with connections, payload size and recipients (the ``growth`` scenario)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    thousands = FuncFormatter(lambda x, _pos: f"{x / 1000:,.0f}k")
    growth = [r for r in data["results"] if r.get("scenario") == "growth" and r.get("ok", True)]
    figure, axes = plt.subplots(1, 4 if growth else 1, figsize=(20 if growth else 7, 4.8), squeeze=False)
    _plot_kinds(axes[0][0], data["results"], thousands)
    for ax, axis, unit in zip(
        axes[0][1:],
        ("connections", "payload", "recipients"),
        ("clients", "bytes per frame", "followers of one topic (SQLite)"),
        strict=False,
    ):
        points = sorted(
            (r.get(axis, r.get("followers", 0)), r["rate"], r.get("server_cpu") or 0.0)
            for r in growth
            if r.get("axis") == axis
        )
        if axis == "recipients":  # the celebrity scenario's million followers on the same store
            points += [
                (r["followers"], r["rows_per_second"], 0.0) for r in data["results"] if _sqlite_celebrity(r)
            ]
        ax.plot([p[0] for p in points], [p[1] for p in points], "o-", label="per second")
        if axis != "recipients":
            per_cpu = [p[1] / p[2] if p[2] else 0.0 for p in points]
            ax.plot([p[0] for p in points], per_cpu, "s--", label="per server CPU-second")
        ax.set_xscale("log")
        ax.set_ylim(bottom=0)
        ax.yaxis.set_major_formatter(thousands)
        ax.set_xlabel(unit)
        ax.set_title(
            "inbox rows/s vs recipients" if axis == "recipients" else f"gateway deliveries vs {axis}"
        )
        ax.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def _sqlite_celebrity(result: dict[str, Any]) -> bool:
    return result.get("scenario") == "celebrity" and result.get("kind") == "sqlite" and bool(result.get("ok"))


def _plot_kinds(ax: Any, results: list[dict[str, Any]], formatter: Any) -> None:
    rows = [r for r in summary(results) if r["scenario"] == "fanout" and r["median"]]
    rows.sort(key=lambda r: r["median"])
    names = [r["kind"] for r in rows]
    per_cpu = []
    for row in rows:
        runs = [
            r["rate"] / r["server_cpu"]
            for r in results
            if group_key(r) == ("fanout", row["kind"]) and r.get("server_cpu") and r.get("complete", True)
        ]
        per_cpu.append(median(runs) if runs else 0.0)
    positions = range(len(rows))
    ax.barh(
        [p + 0.2 for p in positions],
        [r["median"] for r in rows],
        0.4,
        xerr=_errors(rows),
        label="deliveries/s",
    )
    ax.barh([p - 0.2 for p in positions], per_cpu, 0.4, label="per server CPU-second")
    ax.set_yticks(list(positions), names)
    ax.xaxis.set_major_formatter(formatter)
    ax.set_xlabel("unicast deliveries, 1,000 clients, ~200 B frames (median; bars: range)")
    ax.set_title("Fan-out, one server process")
    ax.legend(loc="lower right")


def _errors(rows: list[dict[str, Any]]) -> list[list[float]]:
    return [[r["median"] - r["low"] for r in rows], [r["high"] - r["median"] for r in rows]]


def profile_summary(path: str, top: int = 25, within: Sequence[str] = ()) -> str:
    """Where the samples of a py-spy collapsed-stack file went: the functions with the most samples on top of
    the stack (self) and anywhere in it (inclusive), as shares of all samples; with ``within``, only samples
    whose stack passes through one of those functions (e.g. the load phase, not start-up)."""
    own: dict[str, int] = defaultdict(int)
    inclusive: dict[str, int] = defaultdict(int)
    total = 0
    raw = Path(path).read_bytes()
    text = (gzip.decompress(raw) if path.endswith(".gz") else raw).decode()
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = stack.split(";")
        if within and not any(name in stack for name in within):
            continue
        total += int(count)
        own[_short(frames[-1])] += int(count)
        for name in {_short(f) for f in frames}:
            inclusive[name] += int(count)
    scope = f" within {', '.join(within)}" if within else ""
    lines = [f"{path}: {total} samples{scope}", "self:"]
    lines += [
        f"  {100 * n / total:5.1f}%  {name}" for name, n in sorted(own.items(), key=lambda i: -i[1])[:top]
    ]
    lines.append("inclusive:")
    ranked = sorted(inclusive.items(), key=lambda i: -i[1])
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in ranked[:top]]
    return "\n".join(lines)


def _short(frame: str) -> str:
    """``func (path/to/module.py:12)`` -> ``func (module.py)``: lines merged, so a function is one row."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rsplit('/', 1)[-1].split(':', 1)[0]})" if where else name
