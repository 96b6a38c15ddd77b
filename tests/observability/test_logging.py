"""Logs: JSON lines per component with trace ids, uvicorn's lines in the same format, credentials masked."""

from __future__ import annotations

import json
from pathlib import Path

from .probes import run_probe


def test_log_lines_are_json_with_component_and_trace_ids(tmp_path: Path) -> None:
    """Each line parses as JSON, names its component, and carries the trace and span ids inside a span."""
    ids = run_probe("logs", tmp_path)
    lines = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    by_event = {line["event"]: line for line in lines}

    outside = by_event["outside_any_span"]
    assert outside["logger"] == "tidings.worker"
    assert outside["level"] == "warning"
    assert outside["events"] == 3
    assert "trace_id" not in outside
    assert outside["timestamp"].endswith("Z")
    inside = by_event["inside_a_span"]
    assert inside["logger"] == "tidings.api"
    assert (inside["trace_id"], inside["span_id"]) == (ids["trace_id"], ids["span_id"])
    uvicorn = by_event["Started server process [42]"]
    assert uvicorn["logger"] == "uvicorn.error"
    assert uvicorn["level"] == "info"


def test_credentials_handed_to_a_logger_by_mistake_are_masked(tmp_path: Path) -> None:
    """A token under a secret key, a bearer credential or a JWT in a message or traceback never reaches the log."""
    run_probe("logs", tmp_path)
    text = (tmp_path / "log.jsonl").read_text()
    lines = {json.loads(line)["event"]: json.loads(line) for line in text.splitlines()}
    assert lines["with_secrets"]["token"] == "[redacted]"
    assert "abc.def" not in text
    assert "t0ken" not in text
    assert "eyJzdWIiOiJ4In0" not in text
    assert "RuntimeError" in lines["unhandled_error"]["exception"]
