"""Recall of the IVF self-join and of IVF search against exact (flat) search, on one benchmark batch.

    python bench/faiss/compare.py WORK [--threshold 0.95] [--out RESULT.json]

Ground truth is an exact ``IndexFlatIP`` self-join (k=10) of the same vectors the checks used (read
from the work directory's embedding cache). Reports, at several ``nprobe``, for the IVF self-join the
check uses (``vector_index.self_knn``: cells compared as matrix products) and for per-query IVF search
(what the history search uses): recall@10, recall of the near-duplicate *pairs* (cosine >= threshold),
agreement of the flagged *records* with those the check flags from the exact graph, and time; and the
recall of the planted near-duplicates (``INPUT.pairs.tsv`` from corpus.py) for the exact graph.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from _result import emit  # bench/faiss/_result.py (scripts run from this folder)

from tunegate.core.checks import CanonicalBatch
from tunegate.core.checks._clusters import representatives
from tunegate.core.checks.near_duplicate import DEFAULT_THRESHOLD, NearDuplicateCheck
from tunegate.core.embeddings import EmbeddingSpec, embed_table
from tunegate.core.vector_index import IndexParams, add, new_index, search, self_knn


def pairs_at(sims: np.ndarray, ids: np.ndarray, t: float) -> set[tuple[int, int]]:
    rows, cols = np.nonzero((sims >= t) & (ids >= 0))
    a, b = np.arange(len(ids))[rows], ids[rows, cols]
    return {(int(min(x, y)), int(max(x, y))) for x, y in zip(a, b, strict=True) if x != y}


def flagged(check: NearDuplicateCheck, v: np.ndarray, sims: np.ndarray, ids: np.ndarray) -> set[int]:
    rep, _ = representatives(v, sims, ids, np.zeros(len(v), dtype=bool), lambda i, j: True,
                             threshold=check.threshold)
    return set(np.flatnonzero(rep >= 0).tolist())


def drop_self(sims: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n, kk = ids.shape
    is_self = ids == np.arange(n)[:, None]
    drop = np.where(is_self.any(axis=1), is_self.argmax(axis=1), kk - 1)
    keep = np.ones_like(ids, dtype=bool)
    keep[np.arange(n), drop] = False
    return sims[keep].reshape(n, kk - 1), ids[keep].reshape(n, kk - 1)


def main() -> int:
    import faiss

    ap = argparse.ArgumentParser()
    ap.add_argument("work", type=Path)
    ap.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD)
    ap.add_argument("--pairs", type=Path, help="planted pairs TSV (ids)")
    ap.add_argument("--nprobe", default="4,8,16,32")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    batch = CanonicalBatch(args.work)
    v = embed_table(batch, EmbeddingSpec(), cache_dir=args.work / "embeddings")
    n, k, t = len(v), 10, args.threshold
    res: dict = {"records": n, "threshold": t}
    started = time.perf_counter()
    flat = faiss.IndexFlatIP(v.shape[1])
    flat.add(v)
    es, ei = drop_self(*search(flat, v, k + 1))
    res["flat_s"] = round(time.perf_counter() - started, 1)
    exact_pairs = pairs_at(es, ei, t)
    check = NearDuplicateCheck(threshold=t)
    exact_flagged = flagged(check, v, es, ei)
    res["exact_pairs"], res["exact_flagged"] = len(exact_pairs), len(exact_flagged)
    ids = batch.read_columns(["id"]).column(0).to_pylist()
    if args.pairs and args.pairs.exists():
        pos = {x: i for i, x in enumerate(ids)}
        planted = [(pos[a], pos[b]) for a, b in (ln.split("\t") for ln in args.pairs.read_text().splitlines())
                   if a in pos and b in pos]
        sims_planted = np.einsum("ij,ij->i", v[[a for a, _ in planted]], v[[b for _, b in planted]])
        res["planted_pairs"] = len(planted)
        res["planted_cosine_q01_q05_q50"] = [round(float(x), 4) for x in np.quantile(sims_planted, [.01, .05, .5])]
        res["planted_recall_at_threshold"] = round(float((sims_planted >= t).mean()), 4)
        res["planted_flagged_exact"] = round(sum(b in exact_flagged or a in exact_flagged for a, b in planted)
                                             / max(len(planted), 1), 4)
    params = IndexParams()
    started = time.perf_counter()
    index = new_index(v, params)
    res["ivf_train_s"] = round(time.perf_counter() - started, 1)
    started = time.perf_counter()
    add(index, v)
    res["ivf_add_s"] = round(time.perf_counter() - started, 1)
    res["nlist"] = int(index.nlist)
    res["self_join"] = {}
    for nprobe in (int(x) for x in args.nprobe.split(",")):
        started = time.perf_counter()
        s, i, _ = self_knn(v, k, IndexParams(nprobe=nprobe))
        elapsed = time.perf_counter() - started
        got_flagged = flagged(check, v, s, i)
        hits = sum(len(set(a) & set(b)) for a, b in zip(i.tolist(), ei.tolist(), strict=True))
        res["self_join"][nprobe] = {
            "seconds_with_training": round(elapsed, 1),
            "recall_at_10": round(hits / (n * k), 4),
            "flagged": len(got_flagged),
            "flagged_recall": round(len(got_flagged & exact_flagged) / max(len(exact_flagged), 1), 4),
            "flagged_precision": round(len(got_flagged & exact_flagged) / max(len(got_flagged), 1), 4),
        }
        print("self_join", nprobe, res["self_join"][nprobe], file=sys.stderr, flush=True)
    res["ivf"] = {}
    for nprobe in (int(x) for x in args.nprobe.split(",")):
        started = time.perf_counter()
        s, i = drop_self(*search(index, v, k + 1, nprobe))
        elapsed = time.perf_counter() - started
        got_pairs = pairs_at(s, i, t)
        got_flagged = flagged(check, v, s, i)
        hits = sum(len(set(a) & set(b)) for a, b in zip(i.tolist(), ei.tolist(), strict=True))
        res["ivf"][nprobe] = {
            "search_s": round(elapsed, 1),
            "recall_at_10": round(hits / (n * k), 4),
            "pair_recall": round(len(got_pairs & exact_pairs) / max(len(exact_pairs), 1), 4),
            "flagged": len(got_flagged),
            "flagged_recall": round(len(got_flagged & exact_flagged) / max(len(exact_flagged), 1), 4),
            "flagged_precision": round(len(got_flagged & exact_flagged) / max(len(got_flagged), 1), 4),
        }
        print(nprobe, res["ivf"][nprobe], file=sys.stderr, flush=True)
    np.savez(args.work / "exact_knn.npz", sims=es, ids=ei)
    return emit(res, args.out)


if __name__ == "__main__":
    sys.exit(main())
