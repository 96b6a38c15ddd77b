#!/usr/bin/env bash
# The measurement behind docs/performance.md: every scenario, baselines in the same runs, results as JSON plus
# the Markdown table and the plot. About 80 minutes on the 2-core machine; everything stays on 127.0.0.1.
# Needs: the bench extra (pip install -e '.[bench]'), node + `npm install` here for the ws baseline, Mosquitto
# on 127.0.0.1:1883, PostgreSQL on 127.0.0.1:5432 (db test) and Redis on 127.0.0.1:6379 for the celebrity run.
set -euo pipefail
cd "$(dirname "$0")/.."
tidings="${TIDINGS:-.venv/bin/tidings}"
(cd bench && npm install --no-audit --no-fund >/dev/null) || echo "run-all: npm install failed; the node baseline is skipped" >&2
out="bench/results/${1:-$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$out"
"$tidings" bench run fanout scaleout latency ingest resume --runs 3 --out "$out/throughput.json"
"$tidings" bench run connections --runs 3 --out "$out/connections.json"
"$tidings" bench run celebrity --runs 3 --out "$out/celebrity.json"
"$tidings" bench run growth --runs 1 --out "$out/growth.json"
"$tidings" bench run senders --runs 3 --out "$out/senders.json"
"$tidings" bench report "$out"/*.json --plot "$out/performance.png" > "$out/table.md"
echo "results in $out"
