"""cleanlab Datalab's ``near_duplicate`` + ``outlier`` issue types on the same vectors as tunegate's checks.

    python bench/faiss/peer_datalab.py WORK OUT.npz [--knn-graph]

Reads the vectors from WORK's embedding cache (written by ours.py), so both tools see the same
embeddings. Without ``--knn-graph`` Datalab builds its own kNN graph (scikit-learn, exact); with it,
Datalab is handed the exact FAISS graph from compare.py (``WORK/exact_knn.npz``), which isolates the
cost of its issue managers from the cost of its neighbour search. Writes the flagged rows.
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
    ap.add_argument("--knn-graph", action="store_true")
    args = ap.parse_args()
    from cleanlab import Datalab

    from tunegate.core.checks import CanonicalBatch
    from tunegate.core.embeddings import EmbeddingSpec, embed_table

    batch = CanonicalBatch(args.work)
    v = embed_table(batch, EmbeddingSpec(), cache_dir=args.work / "embeddings")
    n = len(v)
    started = time.perf_counter()
    lab = Datalab(data={"row": np.arange(n)}, verbosity=0)
    kwargs: dict = {}
    if args.knn_graph:
        import scipy.sparse as sp

        with np.load(args.work / "exact_knn.npz") as g:
            sims, ids = g["sims"], g["ids"]
        dist = np.clip(1.0 - sims, 0.0, None).astype(np.float64)  # cosine distance, as Datalab uses
        order = np.argsort(dist, axis=1, kind="stable")
        dist = np.take_along_axis(dist, order, 1)
        ids = np.take_along_axis(ids, order, 1)
        kwargs["knn_graph"] = sp.csr_matrix((dist.ravel(), ids.ravel(), np.arange(0, n * ids.shape[1] + 1,
                                                                                   ids.shape[1])), shape=(n, n))
    lab.find_issues(features=v, issue_types={"near_duplicate": {}, "outlier": {}}, **kwargs)
    elapsed = time.perf_counter() - started
    nd = lab.get_issues("near_duplicate")
    out = lab.get_issues("outlier")
    np.savez(args.out, near_duplicate=np.flatnonzero(nd["is_near_duplicate_issue"].to_numpy()),
             outlier=np.flatnonzero(out["is_outlier_issue"].to_numpy()))
    print(json.dumps({"tool": "datalab" + ("+faiss_knn" if args.knn_graph else ""), "records": n,
                      "seconds": round(elapsed, 1), "near_duplicate": int(nd["is_near_duplicate_issue"].sum()),
                      "outlier": int(out["is_outlier_issue"].sum()),
                      "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
