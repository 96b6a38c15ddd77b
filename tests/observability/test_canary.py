"""Planted secrets (an API key, a user JWT and the app's JWT secret, a stream ticket, a webhook secret, a
notification body) ride 10,000 events and a set of refused requests, logged at DEBUG with tracing on: none
of them appears in a log line, a span, the metrics or an error answer."""

from __future__ import annotations

import json
from pathlib import Path

from .probes import EVENTS, run_probe


def test_no_secret_or_body_leaks_into_logs_traces_metrics_or_error_answers(tmp_path: Path) -> None:
    """10k events with canaries: grep every log line, span, metric and error answer for them; nothing."""
    result = run_probe("canary", tmp_path, timeout=240)
    planted: dict[str, str] = result["planted"]
    logs = (tmp_path / "log.jsonl").read_text()
    spans = (tmp_path / "spans.jsonl").read_text()
    exposition = (tmp_path / "metrics.txt").read_text()
    answers = json.loads((tmp_path / "answers.json").read_text())

    # The run did what it claims: traffic flowed, the worker logged, spans were recorded, errors answered.
    assert spans.count('["worker.fanout"') >= EVENTS
    assert spans.count('["gateway.deliver"') >= EVENTS
    assert '"publish_failed"' in logs
    assert len(answers) == result["answers"] >= 10
    assert {answer["status"] for answer in answers} >= {400, 401, 422}
    for name, secret in planted.items():
        for where, text in (("logs", logs), ("spans", spans), ("metrics", exposition)):
            assert secret not in text, f"the {name} leaked into {where}"
        for answer in answers:
            assert secret not in json.dumps(answer), f"the {name} leaked into an error answer: {answer}"
