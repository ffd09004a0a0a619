#!/usr/bin/env bash
# The FAISS benchmarks, in the order RESULTS.md reports them. Skips (exit 0) without ../shared/corpora.
#   bash bench/faiss/run.sh [OUT_DIR]        (default /tmp/tunegate-faiss-bench; ~45 min on 2 busy cores)
# Peers: uv pip install -p .venv/bin/python --no-deps -r requirements/bench.txt
set -uo pipefail
cd "$(dirname "$0")/../.."
PY=.venv/bin/python
OUT=${1:-/tmp/tunegate-faiss-bench}
mkdir -p "$OUT"
load() { cut -d' ' -f1-3 /proc/loadavg; }
timed() {  # name, command...: wall time and peak RSS of the whole process
  local name=$1; shift
  echo "$name: start $(date +%T), load $(load)" | tee -a "$OUT/log.txt"
  /usr/bin/time -v "$@" > "$OUT/$name.out" 2> "$OUT/$name.err"
  echo "$name: end $(date +%T), load $(load), $(grep -E 'Elapsed|Maximum resident' "$OUT/$name.err" | tr -s ' \t' ' ')" \
    | tee -a "$OUT/log.txt"
}
$PY bench/faiss/corpus.py 100000 "$OUT/c100k.jsonl"; rc=$?
if [ $rc -eq 77 ]; then echo "skipped: ../shared/corpora not found"; exit 0; fi
# 100k: ours, exact ground truth + IVF recall, Datalab (own kNN; and handed the FAISS graph), MinHash LSH
timed ours100k $PY bench/faiss/ours.py "$OUT/c100k.jsonl" "$OUT/w100k"
$PY bench/faiss/compare.py "$OUT/w100k" --pairs "$OUT/c100k.pairs.tsv" > "$OUT/compare100k.json"
$PY bench/faiss/edit_recall.py "$OUT/w100k" "$OUT/c100k.pairs.tsv" > "$OUT/edit_recall100k.json"
timed datalab100k $PY bench/faiss/peer_datalab.py "$OUT/w100k" "$OUT/datalab100k.npz"
timed datalab_knn100k $PY bench/faiss/peer_datalab.py "$OUT/w100k" "$OUT/datalab_knn100k.npz" --knn-graph
timed minhash100k $PY bench/faiss/peer_minhash.py "$OUT/w100k" "$OUT/minhash100k.npz"
$PY bench/faiss/agreement.py "$OUT/w100k" --pairs "$OUT/c100k.pairs.tsv" --datalab "$OUT/datalab100k.npz" \
  --minhash "$OUT/minhash100k.npz" > "$OUT/agreement100k.json"
# 1M batch (hashing), then it becomes the history; a 100k night with 2% edits of history records against it
$PY bench/faiss/corpus.py 1000000 "$OUT/c1m.jsonl" --seed 1
$PY bench/faiss/corpus.py 100000 "$OUT/night.jsonl" --seed 2 --history-of "$OUT/c1m.jsonl" --planted-rate 0.02
$PY -c "import sys; from tunegate.core.ingest import ingest; ingest([sys.argv[1]], sys.argv[2]); ingest([sys.argv[3]], sys.argv[4])" \
  "$OUT/c1m.jsonl" "$OUT/w1m" "$OUT/night.jsonl" "$OUT/wnight"
rm -rf "$OUT/history"
timed ours1m $PY bench/faiss/ours.py "$OUT/c1m.jsonl" "$OUT/w1m" --history "$OUT/history" --update-history
timed night $PY bench/faiss/ours.py "$OUT/night.jsonl" "$OUT/wnight" --history "$OUT/history" --update-history
$PY bench/faiss/throughput.py > "$OUT/throughput.json"
# what the checks flag on the clean corpora, sampled for a hand-check (bench/faiss/review/)
$PY bench/faiss/clean_review.py --work "$OUT/clean" > "$OUT/clean_review.txt"
tail -n 30 "$OUT/log.txt"
