#!/usr/bin/env bash
# Compares two fedshield binaries cell by cell, interleaved (before, then
# after, for each cell of the round-overhead grid), so that both runs of a
# cell see the same machine load. The "after" run also measures the loopback
# baseline. One JSON line per run, tagged "before" or "after", goes to OUT;
# a table is printed at the end.
#
#   bench/pairs.sh BEFORE_BINARY AFTER_BINARY OUT.jsonl
#
# PAIRS_PARAMS and PAIRS_PARTICIPANTS (space-separated) narrow the grid, and
# PAIRS_REPEATS runs each cell's before/after pair that many times, e.g.
#   PAIRS_PARAMS=1000000 PAIRS_PARTICIPANTS=8 PAIRS_REPEATS=5 bench/pairs.sh …
set -euo pipefail
if [ $# -ne 3 ]; then
  echo "usage: bench/pairs.sh BEFORE_BINARY AFTER_BINARY OUT.jsonl" >&2
  exit 2
fi
before=$1
after=$2
out=$3
for params in ${PAIRS_PARAMS:-100000 1000000 10000000}; do
  rounds=5
  if [ "$params" -ge 10000000 ]; then rounds=3; fi
  for participants in ${PAIRS_PARTICIPANTS:-2 8 32}; do
   for repeat in $(seq "${PAIRS_REPEATS:-1}"); do
    for side in before after; do
      binary=$before
      baseline=()
      if [ "$side" = after ]; then binary=$after; baseline=(--baseline); fi
      echo "$side K=$participants P=$params R=$rounds (pair $repeat)" >&2
      "$binary" bench rounds --participants "$participants" --params "$params" \
        --rounds "$rounds" --tls "${baseline[@]}" --json \
        | tail -n 1 \
        | python3 -c "import json, sys; r = json.load(sys.stdin); r['side'] = '$side'; print(json.dumps(r))" \
        >> "$out"
    done
   done
  done
done
python3 "$(dirname "$0")/table.py" --pairs "$out"
