"""Connected components of the near-duplicate graph: our min-label propagation vs scipy's csgraph.

    python bench/faiss/components.py KNN.npz [--copies 10] [--threshold 0.95] [--repeat 3]

KNN.npz is a batch kNN graph as the checks keep it (``WORK/embeddings/knn-*.npz``: ``sims``, ``ids``).
``--copies C`` tiles the graph C times with disjoint row numbers (a 1M-node graph from a 100k one, with
the same degree and component structure; a real 1M kNN graph costs minutes of self-join to build). Each
method runs in a fresh process, so its time includes importing what it needs (numpy is imported by
the check anyway and is not counted; scipy's import is), on two graphs: the edges the check passes
(similarity >= threshold) and the whole kNN graph (every edge, the worst case). The labels must agree
(same partition; ours labels a component by its smallest member, scipy by discovery order).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import sys, time, numpy as np
method, path, copies, threshold = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
whole = sys.argv[5] == "1"
with np.load(path) as g:
    sims, ids = g["sims"], g["ids"]
n0 = len(ids)
edge = (ids >= 0) if whole else (sims >= threshold) & (ids >= 0)
src0 = np.repeat(np.arange(n0), ids.shape[1])[edge.ravel()]
dst0 = ids[edge]
src = np.concatenate([src0 + c * n0 for c in range(copies)])
dst = np.concatenate([dst0 + c * n0 for c in range(copies)])
n = n0 * copies
import tunegate.core.checks  # loaded by the check anyway: not counted
started = time.perf_counter()
if method == "ours":
    from tunegate.core.checks._clusters import _components
    label = _components(n, src, dst)
else:
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    graph = coo_matrix((np.ones(len(src), dtype=np.int8), (src, dst)), shape=(n, n)).tocsr()
    _, label = connected_components(graph, directed=False)
elapsed = time.perf_counter() - started
# canonical form: each component named by its smallest member
first = np.full(label.max() + 1, n, dtype=np.int64)
np.minimum.at(first, label, np.arange(n))
canon = first[label]
import hashlib
print(f"{elapsed:.4f} {len(src)} {len(np.unique(canon))} {hashlib.sha256(canon.tobytes()).hexdigest()[:16]}")
"""


def run(method: str, path: str, copies: int, threshold: float, whole: bool) -> dict:
    argv = [sys.executable, "-c", CHILD, method, path, str(copies), str(threshold), "1" if whole else "0"]
    out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout.split()
    return {"seconds": float(out[0]), "edges": int(out[1]), "components": int(out[2]), "labels": out[3]}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("knn")
    ap.add_argument("--copies", type=int, default=1)
    ap.add_argument("--threshold", type=float, default=0.95)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    for whole in (False, True):
        row: dict = {"copies": args.copies, "graph": "whole kNN" if whole else f"edges >= {args.threshold}"}
        for method in ("ours", "scipy"):
            runs = [run(method, args.knn, args.copies, args.threshold, whole) for _ in range(args.repeat)]
            row[method] = min(r["seconds"] for r in runs)
            row[f"{method}_labels"] = runs[0]["labels"]
            row["edges"], row["components"] = runs[0]["edges"], runs[0]["components"]
        row["same_partition"] = row.pop("ours_labels") == row.pop("scipy_labels")
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
