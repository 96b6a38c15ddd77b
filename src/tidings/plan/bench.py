"""Unit costs from a ``tidings bench`` result file (the JSON ``tidings bench run … --out FILE`` writes).

The file is ``{"machine": …, "results": [{"scenario", "kind", …}, …]}``, one entry per run of a job (see
``tidings.bench.report``). For each unit the planner knows, the median over the successful runs of the matching
(scenario, kind) replaces the shipped default; a unit the file has no run for keeps its default, and the output
names the source of every unit. Rates are divided by the server CPU the run used, as docs/performance.md
compares them (deliveries per CPU-second), so a run on a busy machine is not read as a slow server.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tidings.errors import ConfigError
from tidings.plan.units import DEFAULT_UNITS, Units

Result = Mapping[str, Any]


def _ok(result: Result) -> bool:
    return bool(result.get("ok", True)) and bool(result.get("complete", True))


def _per_core(field: str) -> Callable[[Result], float | None]:
    def value(result: Result) -> float | None:
        rate, cpu = result.get(field), result.get("server_cpu")
        if not isinstance(rate, int | float):
            return None
        return float(rate) / float(cpu) if isinstance(cpu, int | float) and cpu > 0 else float(rate)

    return value


def _field(field: str) -> Callable[[Result], float | None]:
    def value(result: Result) -> float | None:
        raw = result.get(field)
        return float(raw) if isinstance(raw, int | float) else None

    return value


def _base_rss(result: Result) -> float | None:
    rss, each, n = result.get("server_rss_mb"), result.get("bytes_per_connection"), result.get("held")
    if not all(isinstance(v, int | float) for v in (rss, each, n)):
        return None
    return float(rss) - float(each) * float(n) / 1e6  # type: ignore[arg-type]


def _resumes(result: Result) -> float | None:
    n, seconds = result.get("resumed"), result.get("seconds")
    if not isinstance(n, int | float) or not isinstance(seconds, int | float) or seconds <= 0:
        return None
    return float(n) / float(seconds)


def _rows_per_second(result: Result) -> float | None:
    rows, seconds = result.get("rows"), result.get("seconds")
    if not isinstance(rows, int | float) or not isinstance(seconds, int | float) or seconds <= 0:
        return None
    return float(rows) / float(seconds)


# unit name -> (scenario, predicate on the result, value of one run)
_MATCHERS: dict[str, tuple[str, Callable[[Result], bool], Callable[[Result], float | None]]] = {
    "gateway_deliveries_per_core": (
        "fanout",
        lambda r: r.get("kind") == "tidings-gc" and r.get("servers", 1) == 1,
        _per_core("rate"),
    ),
    "gateway_deliveries_per_core_uvicorn": (
        "fanout",
        lambda r: r.get("kind") == "tidings-uvicorn",
        _per_core("rate"),
    ),
    "gateway_bytes_per_connection": (
        "connections",
        lambda r: r.get("kind") == "tidings",
        _field("bytes_per_connection"),
    ),
    "gateway_bytes_per_connection_uvicorn": (
        "connections",
        lambda r: r.get("kind") == "tidings-uvicorn",
        _field("bytes_per_connection"),
    ),
    "process_base_rss_mb": ("connections", lambda r: r.get("kind") == "tidings", _base_rss),
    "gateway_resumes_per_core": ("resume", lambda r: r.get("kind") == "tidings", _resumes),
    "gateway_resumes_per_core_uvicorn": ("resume", lambda r: r.get("kind") == "tidings-uvicorn", _resumes),
    "api_single_per_core": ("ingest", lambda r: r.get("kind") == "single", _per_core("rate")),
    "api_batch_per_core": (
        "ingest",
        lambda r: r.get("kind") == "batch" and r.get("batch") == 500,
        _per_core("rate"),
    ),
    "worker_rows_per_core": ("celebrity", lambda r: r.get("kind") == "postgresql", _rows_per_second),
    "store_rows_per_core": ("celebrity", lambda r: r.get("kind") == "postgresql", _rows_per_second),
}


def units_from_results(results: Iterable[Result], source: str, base: Units = DEFAULT_UNITS) -> Units:
    """``base`` with every unit the results measure replaced by the median of its successful runs."""
    runs = [r for r in results if isinstance(r, Mapping) and _ok(r)]
    found: dict[str, float] = {}
    for name, (scenario, matches, value) in _MATCHERS.items():
        values = [
            v for r in runs if r.get("scenario") == scenario and matches(r) if (v := value(r)) is not None
        ]
        if values:
            found[name] = statistics.median(values)
    return base.replace(source, **found) if found else base


def read_results(path: str) -> list[Result]:
    """The runs of one result file; a file that is not one is a ``ConfigError`` naming it."""
    try:
        data = json.loads(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(f"--bench {path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise ConfigError(f"--bench {path}: not JSON ({exc})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("results"), list):
        raise ConfigError(f'--bench {path}: not a `tidings bench` result file (no "results" list)')
    return list(data["results"])


def load_units(paths: Sequence[str], base: Units = DEFAULT_UNITS) -> Units:
    """The runs of every file pooled: a unit measured in two files is the median of all its runs."""
    results = [result for path in paths for result in read_results(path)]
    return units_from_results(results, "--bench " + ", ".join(paths), base) if paths else base
