#!/usr/bin/env bash
# Wall time and peak memory of `tunegate scan` (default checks + GX suite) on N records built from
# ../shared/corpora, against a plain datasets+pandas script doing the same checks, measured in the same run.
#   bash bench/scan/run.sh [N]        (default 100000; skips with exit 0 when ../shared/corpora is absent)
set -uo pipefail
cd "$(dirname "$0")/../.."
N=${1:-100000}
PY=.venv/bin/python
RES=bench/results/scan-$N
mkdir -p "$RES"
$PY bench/corpus.py "$N" "$RES/input.jsonl"; rc=$?
if [ $rc -eq 77 ]; then echo "skipped: ../shared/corpora not found"; exit 0; fi
[ $rc -eq 0 ] || exit $rc
measure() {  # name, command...
  local name=$1; shift
  /usr/bin/time -v "$@" > "$RES/$name.out" 2> "$RES/$name.time"
  local wall rss
  wall=$(grep "Elapsed (wall clock)" "$RES/$name.time" | awk '{print $NF}')
  rss=$(grep "Maximum resident set size" "$RES/$name.time" | awk '{print $NF}')
  echo "$name $wall $rss"
}
T=$(measure tunegate .venv/bin/tunegate scan "$RES/input.jsonl" --out "$RES/tunegate" -q)
P=$(measure peer $PY bench/scan/peer.py "$RES/input.jsonl" "$RES/peer")
$PY - "$N" "$T" "$P" <<'PY'
import sys
def secs(s):
    parts = [float(p) for p in s.split(":")]
    return sum(p * 60 ** i for i, p in enumerate(reversed(parts)))
n = int(sys.argv[1])
rows = [a.split() for a in sys.argv[2:]]
base = {r[0]: (secs(r[1]), int(r[2]) / 1024) for r in rows}
tw, tm = base["tunegate"]; pw, pm = base["peer"]
print(f"| N={n} | wall s | peak RSS MiB | records/s |")
print("|---|---|---|---|")
for name, (w, m) in base.items():
    print(f"| {name} | {w:.1f} | {m:.0f} | {n / w:,.0f} |")
print(f"tunegate/peer: wall x{tw / pw:.2f}, peak memory x{tm / pm:.2f}")
PY
