"""datasketch MinHash LSH near-duplicates on the text of the same batch.

    python bench/faiss/peer_minhash.py WORK OUT.npz [--threshold 0.8] [--num-perm 128]

The usual text-dedup recipe: shingles are the character 5-grams of the lower-cased, whitespace-collapsed
``instruction + input + output``; LSH at Jaccard ``threshold``; records are taken in batch order and a
record is flagged when LSH returns an earlier record (the earlier one is kept), as tunegate does.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("work", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--threshold", type=float, default=0.8)
    ap.add_argument("--num-perm", type=int, default=128)
    args = ap.parse_args()
    from datasketch import MinHash, MinHashLSH

    from tunegate.core.checks import CanonicalBatch

    batch = CanonicalBatch(args.work)
    table = batch.read_columns(["instruction", "input", "output"]).to_pydict()
    started = time.perf_counter()
    texts = [" ".join(f"{a} {b} {c}".lower().split())
             for a, b, c in zip(table["instruction"], table["input"], table["output"], strict=True)]
    shingles = [[t[i:i + 5].encode() for i in range(max(len(t) - 4, 1))] for t in texts]
    hashes = MinHash.bulk(shingles, num_perm=args.num_perm)
    t_hash = time.perf_counter() - started
    lsh = MinHashLSH(threshold=args.threshold, num_perm=args.num_perm)
    flagged = []
    for i, m in enumerate(hashes):
        if lsh.query(m):
            flagged.append(i)
        lsh.insert(i, m)
    elapsed = time.perf_counter() - started
    np.savez(args.out, near_duplicate=np.array(flagged, dtype=np.int64))
    print(json.dumps({"tool": "datasketch_minhash_lsh", "records": len(texts), "seconds": round(elapsed, 1),
                      "minhash_s": round(t_hash, 1), "near_duplicate": len(flagged), "threshold": args.threshold,
                      "num_perm": args.num_perm,
                      "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
