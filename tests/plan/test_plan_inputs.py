"""The planner's inputs: workload files (YAML, the subset read without PyYAML, JSON), validation, the shipped
example workloads, and unit costs from `tidings bench` result files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tidings.errors import ConfigError
from tidings.plan.bench import load_units, units_from_results
from tidings.plan.capacity import plan
from tidings.plan.costs import Prices, parse_price_flags
from tidings.plan.document import load_document, parse_subset
from tidings.plan.units import DEFAULT_UNITS
from tidings.plan.workload import Workload

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "docs" / "workloads").glob("*.yaml"))
FINAL = ROOT / "bench" / "results" / "final"


def test_the_subset_reads_nested_mappings_scalars_and_comments() -> None:
    """`key: value` lines nested by indentation; ints with underscores, floats, booleans, null, quoted
    strings; a `#` after a space starts a comment, inside quotes it does not."""
    text = 'a: 10_000  # ten thousand\nb:\n  1: 0.5\n  "x y": "p # q"\nc: yes\nd: ~\ne: 1e6\n'
    assert parse_subset(text) == {"a": 10_000, "b": {1: 0.5, "x y": "p # q"}, "c": True, "d": None, "e": 1e6}


def test_the_subset_refuses_what_it_does_not_read() -> None:
    """A list is not in the subset: the error says to install PyYAML or write JSON."""
    with pytest.raises(ConfigError, match="pyyaml"):
        parse_subset("a:\n  - 1\n")


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_each_example_reads_the_same_with_and_without_pyyaml(path: Path) -> None:
    """The shipped examples stay inside the subset, so `tidings plan` reads them without PyYAML."""
    yaml = pytest.importorskip("yaml")
    assert parse_subset(path.read_text()) == yaml.safe_load(path.read_text())


def test_two_examples_are_shipped_and_the_bigger_needs_more_of_everything() -> None:
    """10M and 100M daily users: every role, the store and the broker grow with the users."""
    small, big = (plan(Workload.from_mapping(load_document(str(p))), DEFAULT_UNITS) for p in EXAMPLES[::-1])
    assert (small.workload.daily_users, big.workload.daily_users) == (10_000_000, 100_000_000)
    for a, b in zip(small.roles, big.roles, strict=True):
        assert b.processes > a.processes
    assert big.store.size_gib > small.store.size_gib
    assert big.broker.peak_appends_per_second > small.broker.peak_appends_per_second


def test_json_workloads_and_flags(tmp_path: Path) -> None:
    """A .json file is JSON; command-line values win over the file's."""
    path = tmp_path / "w.json"
    path.write_text(json.dumps({"daily_users": 1000, "recipients": {"1": 1.0}}))
    workload = Workload.from_mapping(load_document(str(path)), daily_users=2000, retention_days=None)
    assert (workload.daily_users, workload.recipients, workload.retention_days) == (2000, {1: 1.0}, 30)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"daily_users": 10, "dayly_users": 1}, "unknown workload keys: dayly_users"),
        ({}, "needs daily_users"),
        ({"daily_users": 10, "recipients": {1: 0.5}}, "sum to 0.5"),
        ({"daily_users": 10, "batch_share": 2}, "batch_share"),
        ({"daily_users": 10, "ws_server": "nginx"}, "fastws or uvicorn"),
        ({"daily_users": "many"}, "not a valid int"),
        ({"daily_users": 10, "retention_days": -1}, "not negative"),
    ],
)
def test_a_bad_workload_is_refused_with_a_reason(data: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Workload.from_mapping(data)


def test_prices_override_and_refuse_unknown_names() -> None:
    """`--price core_hour=0.1` changes one price; a misspelt one is refused, naming the known ones."""
    assert Prices.from_mapping(parse_price_flags(["core_hour=0.1"])).core_hour == 0.1
    with pytest.raises(ConfigError, match="unknown prices: cpu_hour"):
        Prices.from_mapping({"cpu_hour": 1})
    with pytest.raises(ConfigError, match="name=value"):
        parse_price_flags(["core_hour"])


def test_units_are_medians_per_server_cpu_second() -> None:
    """Three fan-out runs of 100k/s at 0.5, 1.0 and 0.8 of a core: 200k, 100k and 125k per CPU-second, median
    125k. Failed runs are left out. A unit the results do not measure keeps its default and source."""
    runs = [
        {"scenario": "fanout", "kind": "tidings-gc", "rate": 100_000, "server_cpu": cpu, "complete": True}
        for cpu in (0.5, 1.0, 0.8)
    ]
    runs.append({"scenario": "fanout", "kind": "tidings-gc", "rate": 1, "server_cpu": 1, "complete": False})
    units = units_from_results(runs, "mine")
    assert units.gateway_deliveries_per_core == pytest.approx(125_000)
    assert units.source("gateway_deliveries_per_core") == "mine"
    assert units.worker_rows_per_core == DEFAULT_UNITS.worker_rows_per_core
    assert "celebrity" in units.source("worker_rows_per_core")


def test_the_shipped_defaults_are_what_the_final_result_files_give() -> None:
    """Reading the reference runs back with --bench reproduces every measured default."""
    units = load_units([str(FINAL / name) for name in ("fanout-quiet.json", "connections.json")])
    units = load_units([str(FINAL / "latency-ingest-resume-quiet.json")], units)
    units = load_units([str(FINAL / "celebrity-growth.json"), str(FINAL / "celebrity-more.json")], units)
    for name in (
        "gateway_deliveries_per_core",
        "gateway_deliveries_per_core_uvicorn",
        "gateway_bytes_per_connection",
        "gateway_bytes_per_connection_uvicorn",
        "process_base_rss_mb",
        "gateway_resumes_per_core",
        "gateway_resumes_per_core_uvicorn",
        "api_single_per_core",
        "api_batch_per_core",
        "worker_rows_per_core",
        "store_rows_per_core",
    ):
        assert getattr(units, name) == pytest.approx(getattr(DEFAULT_UNITS, name), rel=2e-3), name
        assert units.source(name).startswith("--bench"), name


def test_a_file_that_is_not_a_result_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_text("[]")
    with pytest.raises(ConfigError, match="not a `tidings bench` result file"):
        load_units([str(path)])


def test_distributions_from_flags() -> None:
    """`--recipients 1=0.5,3=0.5` on the command line replaces the file's distribution: mean recipients 2."""
    from tidings.plan.command import parser
    from tidings.plan.traffic import traffic

    args = parser().parse_args(
        ["--daily-users", "10", "--recipients", "1=0.5,3=0.5", "--channels", "email=1"]
    )
    workload = Workload.from_mapping(
        {}, daily_users=args.daily_users, recipients=args.recipients, channels=args.channels
    )
    assert workload.recipients == {1: 0.5, 3: 0.5}
    assert traffic(workload).mean_recipients == 2
    assert workload.channels == {"email": 1.0}
    with pytest.raises(SystemExit):
        parser().parse_args(["--recipients", "1:0.5"])
