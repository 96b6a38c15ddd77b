"""The files a team deploys (deploy/observability): alert rules pass their unit tests, the configs parse and
wire up, and the dashboard and rules name only metrics Tidings exports."""

from __future__ import annotations

import json
import re
import subprocess
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from tidings.observability import metrics

from .tools import require

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "observability"
METRIC = re.compile(r"\b((?:tidings|process)_[a-z_]+|tidings:[a-z0-9_:]+)\b")


def _exported_names() -> set[str]:
    """Every sample name the registry can expose (a histogram's _bucket/_count/_sum, a counter's _total)."""
    names = set()
    for family in metrics.REGISTRY.collect():
        names.add(family.name)
        names.update(family.name + suffix for suffix in ("_total", "_bucket", "_count", "_sum"))
    return names


def _recorded(rules: dict[str, Any]) -> set[str]:
    return {rule["record"] for group in rules["groups"] for rule in group["rules"] if "record" in rule}


def _dashboard_exprs() -> list[str]:
    dashboard = json.loads((DEPLOY / "grafana" / "tidings.json").read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]


def test_the_alert_rules_pass_their_unit_tests() -> None:
    """promtool checks the rules and runs alerts.test.yml: each alert fires when it must, and only then."""
    promtool = require("promtool", "prometheus")
    for args in (["check", "rules", "alerts.yml"], ["test", "rules", "alerts.test.yml"]):
        done = subprocess.run([promtool, *args], cwd=DEPLOY, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr


def test_the_scrape_configs_are_valid() -> None:
    """promtool accepts the Compose scrape config (on the metrics port); the Kubernetes one keeps only tidings
    pods on their port named metrics (the http port answers 404 for /metrics)."""
    promtool = require("promtool", "prometheus")
    done = subprocess.run(
        [promtool, "check", "config", "prometheus.yml"],
        cwd=DEPLOY,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    compose = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    assert [sd["port"] for sd in compose["scrape_configs"][0]["dns_sd_configs"]] == [9080]
    # (Debian's promtool is built without Kubernetes discovery, so that file is checked by its structure.)
    k8s = yaml.safe_load((DEPLOY / "prometheus-kubernetes.yml").read_text())
    (job,) = k8s["scrape_configs"]
    assert job["kubernetes_sd_configs"] == [{"role": "pod", "namespaces": {"names": ["tidings"]}}]
    keeps = {
        tuple(r["source_labels"]): r["regex"] for r in job["relabel_configs"] if r.get("action") == "keep"
    }
    assert keeps[("__meta_kubernetes_pod_label_app_kubernetes_io_name",)] == "tidings"
    assert keeps[("__meta_kubernetes_pod_container_port_name",)] == "metrics"
    assert k8s["rule_files"] == ["alerts.yml"]


def test_the_dashboard_and_the_rules_name_only_metrics_that_exist() -> None:
    """A renamed metric breaks this test, not a dashboard panel at 3 a.m."""
    rules = yaml.safe_load((DEPLOY / "alerts.yml").read_text())
    known = _exported_names() | _recorded(rules)
    rule_exprs = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    used = {name for expr in [*rule_exprs, *_dashboard_exprs()] for name in METRIC.findall(expr)}
    assert used
    assert used <= known, sorted(used - known)
    assert {"tidings_funnel_total", "tidings_log_lag", "tidings_connections"} <= used


def test_every_alert_has_a_runbook_entry_and_a_severity() -> None:
    """Each alert links an entry in docs/observability.md that exists."""
    rules = yaml.safe_load((DEPLOY / "alerts.yml").read_text())
    doc = (DEPLOY.parents[1] / "docs" / "observability.md").read_text()
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", line[4:].strip().lower()).replace(" ", "-")
        for line in doc.splitlines()
        if line.startswith("### ")
    }
    alerts = [rule for group in rules["groups"] for rule in group["rules"] if "alert" in rule]
    assert len(alerts) >= 8
    for alert in alerts:
        assert alert["labels"]["severity"] in {"warning", "critical"}
        anchor = alert["annotations"]["runbook_url"].split("#")[1]
        assert anchor == alert["alert"].lower()
        assert anchor in anchors, f"no runbook entry '### {alert['alert']}' in docs/observability.md"


def test_the_grafana_dashboard_is_importable_anywhere() -> None:
    """Valid JSON, unique panel ids, and the data source a variable (no instance-specific uid)."""
    dashboard = json.loads((DEPLOY / "grafana" / "tidings.json").read_text())
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}"
            assert panel["targets"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"


def test_the_collector_pipeline_uses_only_what_it_defines() -> None:
    """The OTLP receiver listens on 4318 (what Tidings exports to); every pipeline part is defined."""
    config = yaml.safe_load((DEPLOY / "otel-collector.yaml").read_text())
    assert config["receivers"]["otlp"]["protocols"]["http"]["endpoint"].endswith(":4318")
    for pipeline in config["service"]["pipelines"].values():
        for kind in ("receivers", "processors", "exporters"):
            assert set(pipeline[kind]) <= set(config[kind]), kind
    exporters = config["exporters"]
    assert {"otlp/jaeger", "otlp/tempo"} <= set(exporters)


def _sections(path: Path) -> list[tuple[str, dict[str, list[str]]]]:
    """A Fluent Bit classic config: [SECTION] headers, then `Key Value` lines (keys repeat: not INI)."""
    sections: list[tuple[str, dict[str, list[str]]]] = []
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            sections.append((line.strip("[]"), {}))
            continue
        key, _, value = line.partition(" ")
        sections[-1][1].setdefault(key, []).append(value.strip())
    return sections


def test_fluent_bit_parses_the_lines_tidings_writes() -> None:
    """Every parser the pipeline names exists, and the JSON parser's time format reads our timestamps."""
    pipeline = _sections(DEPLOY / "fluent-bit.conf")
    parsers = {
        fields["Name"][0]: fields for kind, fields in _sections(DEPLOY / "parsers.conf") if kind == "PARSER"
    }
    (service,) = [fields for kind, fields in pipeline if kind == "SERVICE"]
    assert service["Parsers_File"] == ["parsers.conf"]
    named = [fields["Parser"][0] for kind, fields in pipeline if "Parser" in fields]
    assert named
    assert set(named) <= set(parsers)
    ours = parsers["tidings_json"]
    assert ours["Format"] == ["json"]
    assert ours["Time_Key"] == ["timestamp"]
    # Fluent Bit's %L is the fraction of a second; Python's %f reads the same digits.
    python_format = ours["Time_Format"][0].replace("%L", "%f")
    datetime.strptime("2026-11-25T21:00:00.123456Z", python_format)  # as structlog's TimeStamper writes
