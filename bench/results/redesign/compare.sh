#!/usr/bin/env bash
# Before/after of a change, interleaved in one run set: `tidings bench run fanout ingest --kinds tidings` with
# the code of BEFORE_SRC and AFTER_SRC (two checkouts' src/ folders) in turn, three rounds.
#   bench/results/redesign/compare.sh /path/to/old/src /path/to/new/src [out-dir]
set -euo pipefail
before=$1 after=$2 out=${3:-bench/results/compare}
mkdir -p "$out"
for round in 1 2 3; do
  for tree in before after; do
    src=$before; [ "$tree" = after ] && src=$after
    PYTHONPATH=$src .venv/bin/tidings bench run fanout ingest --kinds tidings --runs 1 --out "$out/$tree-$round.json"
  done
done
