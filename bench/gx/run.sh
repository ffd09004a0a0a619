#!/usr/bin/env bash
# Validation time and peak memory of the two default GX suites on N records built from ../shared/corpora,
# against a plain pandas implementation of the same rules, measured in the same run.
#   bash bench/gx/run.sh [N...]     (default: 100000 1000000; skips when ../shared/corpora is absent)
set -uo pipefail
cd "$(dirname "$0")/../.."
PY=.venv/bin/python
[ $# -gt 0 ] || set -- 100000 1000000
echo "| records | impl | validation s | wall s (with imports) | peak RSS MiB | rows flagged | µs/record |"
echo "|---|---|---|---|---|---|---|"
for N in "$@"; do
  RES=bench/results/gx-$N
  mkdir -p "$RES"
  $PY bench/corpus.py "$N" "$RES/input.jsonl" 2>/dev/null; rc=$?
  if [ $rc -eq 77 ]; then echo "skipped: ../shared/corpora not found"; exit 0; fi
  [ $rc -eq 0 ] || exit $rc
  $PY -c "from tunegate.core.ingest import ingest; ingest(['$RES/input.jsonl'], '$RES/work')"
  declare -A secs
  for impl in pandas gx; do
    /usr/bin/time -v $PY bench/gx/validate.py $impl "$RES/work" > "$RES/$impl.out" 2> "$RES/$impl.time"
    s=$(sed -n 's/.*seconds=\([0-9.]*\).*/\1/p' "$RES/$impl.out"); f=$(sed -n 's/flagged=\([0-9]*\).*/\1/p' "$RES/$impl.out")
    wall=$(grep "Elapsed (wall clock)" "$RES/$impl.time" | awk '{print $NF}')
    rss=$(( $(grep "Maximum resident set size" "$RES/$impl.time" | awk '{print $NF}') / 1024 ))
    secs[$impl]=$s
    us=$($PY -c "print(f'{$s / $N * 1e6:.1f}')")
    echo "| $N | $impl | $s | $wall | $rss | $f | $us |"
  done
  $PY -c "g, p = ${secs[gx]}, ${secs[pandas]}; print(f'N=$N: GX/pandas validation time x{g / p:.2f}; GX overhead {(g - p) / $N * 1e6:.1f} µs/record')"
done
