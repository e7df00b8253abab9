#!/usr/bin/env bash
# Runs the round-overhead grid of docs/BENCHMARKS.md: fedshield (mutual TLS,
# with the loopback baseline) and, when FLOWER_PYTHON points at a Python with
# flwr installed, Flower (TLS), over K in {2, 8, 32} x P in {100k, 1M, 10M}.
# Writes one JSON line per cell to bench/results/{fedshield,flower}.jsonl.
#
#   cargo build --release
#   FLOWER_PYTHON=/path/to/venv/bin/python bench/grid.sh
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p bench/results
fedshield=target/release/fedshield
for params in 100000 1000000 10000000; do
  rounds=5
  if [ "$params" -ge 10000000 ]; then rounds=3; fi
  for participants in 2 8 32; do
    echo "fedshield K=$participants P=$params R=$rounds" >&2
    "$fedshield" bench rounds --participants "$participants" --params "$params" \
      --rounds "$rounds" --tls --baseline --json >> bench/results/fedshield.jsonl
    if [ -n "${FLOWER_PYTHON:-}" ]; then
      echo "flower K=$participants P=$params R=$rounds" >&2
      "$FLOWER_PYTHON" bench/flower/bench_rounds.py --participants "$participants" \
        --params "$params" --rounds "$rounds" --tls --json >> bench/results/flower.jsonl \
        || echo "{\"framework\": \"flower\", \"participants\": $participants, \"params\": $params, \"failed\": true}" >> bench/results/flower.jsonl
    fi
  done
done
