"""Embedding throughput of each backend on real records (records/s), single process.

    python bench/faiss/throughput.py [--n 20000] [--backends hashing,static,minilm] [--static-model DIR]

Records are the first N of the shuffled real corpora (all three fields embedded, as the checks do).
Backends whose optional extra is missing are reported as skipped. Model load time is reported apart.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from corpus import CORPORA, FIELDS, SKIP, load
from tunegate.core.embeddings import EmbeddingSpec, build_embedder
from tunegate.exceptions import ConfigError


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--backends", default="hashing,static,minilm")
    ap.add_argument("--static-model", default="/tmp/tunegate-static-minilm")
    ap.add_argument("--minilm-n", type=int, default=2000, help="records for minilm (it is ~100x slower)")
    args = ap.parse_args()
    if not list(CORPORA.glob("*.jsonl.gz")):
        print("skipped: no corpora", file=sys.stderr)
        return SKIP
    recs = load(CORPORA)
    random.Random(0).shuffle(recs)
    out = []
    for backend in args.backends.split(","):
        n = args.minilm_n if backend == "minilm" else args.n
        cols = {f: [r[f] for r in recs[:n]] for f in FIELDS}
        spec = EmbeddingSpec(backend=backend, model_path=args.static_model if backend == "static" else None)
        emb = build_embedder(spec)
        try:
            t = time.perf_counter()
            emb.embed({f: c[:2] for f, c in cols.items()})  # loads the model
            load_s = time.perf_counter() - t
            t = time.perf_counter()
            v = emb.embed(cols)
            secs = time.perf_counter() - t
        except ConfigError as exc:
            out.append({"backend": backend, "skipped": str(exc)[:120]})
            continue
        out.append({"backend": backend, "records": n, "dim": int(v.shape[1]), "load_s": round(load_s, 1),
                    "seconds": round(secs, 1), "records_per_s": round(n / secs)})
        print(json.dumps(out[-1]), file=sys.stderr, flush=True)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
