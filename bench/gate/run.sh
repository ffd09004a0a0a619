#!/usr/bin/env bash
# The full default gate (every check + both GX suites, no options) against the exact-duplicate-only run and
# the former default (exact duplicates + both suites), on N records built from ../shared/corpora, measured
# in one sitting with /usr/bin/time -v. Also the same night rerun against the history it just wrote.
#   bash bench/gate/run.sh [N ...]     (default: 20000 100000; exit 0 with "skipped" without ../shared/corpora)
set -uo pipefail
cd "$(dirname "$0")/../.."
PY=.venv/bin/python
SIZES=("$@"); [ ${#SIZES[@]} -eq 0 ] && SIZES=(20000 100000)
measure() {  # dir, name, command...
  local res=$1 name=$2; shift 2
  /usr/bin/time -v "$@" > "$res/$name.out" 2> "$res/$name.time"
  local wall rss verdict
  wall=$(grep "Elapsed (wall clock)" "$res/$name.time" | awk '{print $NF}')
  rss=$(grep "Maximum resident set size" "$res/$name.time" | awk '{print $NF}')
  verdict=$(head -n 1 "$res/$name.out" | awk '{print $3}' | tr -d ':')
  echo "$name $wall $rss $verdict"
}
for N in "${SIZES[@]}"; do
  RES=bench/results/gate-$N
  rm -rf "$RES"; mkdir -p "$RES"
  $PY bench/corpus.py "$N" "$RES/input.jsonl"; rc=$?
  if [ $rc -eq 77 ]; then echo "skipped: ../shared/corpora not found"; exit 0; fi
  [ $rc -eq 0 ] || exit $rc
  A=$(measure "$RES" exact_only .venv/bin/tunegate scan "$RES/input.jsonl" --out "$RES/exact" -q \
      --check exact_duplicate --no-suite)
  B=$(measure "$RES" former_default .venv/bin/tunegate scan "$RES/input.jsonl" --out "$RES/former" -q \
      --check exact_duplicate)
  C=$(measure "$RES" full_gate .venv/bin/tunegate scan "$RES/input.jsonl" --out "$RES/full" -q \
      --history "$RES/history")
  D=$(measure "$RES" full_gate_rerun .venv/bin/tunegate scan "$RES/input.jsonl" --out "$RES/full" -q \
      --history "$RES/history")
  $PY - "$N" "$RES" "$A" "$B" "$C" "$D" <<'PY'
import json, sys
from pathlib import Path
def secs(s):
    return sum(float(p) * 60 ** i for i, p in enumerate(reversed(s.split(":"))))
n, res = int(sys.argv[1]), Path(sys.argv[2])
rows = {r[0]: (secs(r[1]), int(r[2]) / 1024, r[3] if len(r) > 3 else "?") for r in (a.split() for a in sys.argv[3:])}
base = rows["exact_only"][0]
print(f"\n| N={n:,} | wall s | x exact-only | peak RSS MiB | verdict |")
print("|---|---|---|---|---|")
for name, (w, m, v) in rows.items():
    print(f"| {name} | {w:.1f} | {w / base:.1f} | {m:,.0f} | {v} |")
s = json.loads((res / "full" / "summary.json").read_text())
print("full gate, quarantined per reason:", {k: v for k, v in s["reasons"].items()})
print("check status:", {k: v["status"] for k, v in s.get("check_status", {}).items()})
PY
done
