"""Reading this process's metrics the way Prometheus would: from the text exposition."""

from __future__ import annotations

import re

from prometheus_client.parser import text_string_to_metric_families

from tidings.observability import metrics


def exposition() -> str:
    return metrics.render()[0].decode()


def value(name: str, **labels: str) -> float:
    """One sample's value (0 when it does not exist yet)."""
    for family in text_string_to_metric_families(exposition()):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def series() -> set[str]:
    """Every series (sample name and label set) exposed now."""
    return {
        sample.name + repr(sorted(sample.labels.items()))
        for family in text_string_to_metric_families(exposition())
        for sample in family.samples
    }


def label_values(label: str) -> set[str]:
    return set(re.findall(rf'{label}="([^"]*)"', exposition()))
