"""Agreement of the near-duplicate and outlier verdicts of tunegate, Datalab and MinHash on one batch.

    python bench/faiss/agreement.py WORK --pairs INPUT.pairs.tsv [--datalab D.npz] [--minhash M.npz]

Ground truth for near-duplicates: (a) exact search — the records tunegate's clustering flags when fed the
exact flat kNN graph (compare.py wrote it to WORK/exact_knn.npz); (b) the planted light edits. A planted
pair counts as found when its edited record is flagged (for Datalab, which marks every member of a
near-duplicate set, when it is marked). Datalab's and MinHash's own notions of "near" differ from a cosine
threshold, so their agreement with (a) measures overlap, not error; (b) is tool-neutral.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from _result import emit  # bench/faiss/_result.py (scripts run from this folder)

from tunegate.core.checks import CanonicalBatch
from tunegate.core.checks._clusters import representatives
from tunegate.core.checks.near_duplicate import NearDuplicateCheck
from tunegate.core.embeddings import EmbeddingSpec, embed_table


def overlap(name: str, got: set[int], truth: set[int]) -> dict:
    both = len(got & truth)
    return {"tool": name, "flagged": len(got), "recall_vs_exact": round(both / max(len(truth), 1), 4),
            "precision_vs_exact": round(both / max(len(got), 1), 4)}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("work", type=Path)
    ap.add_argument("--pairs", type=Path, required=True)
    ap.add_argument("--datalab", type=Path)
    ap.add_argument("--minhash", type=Path)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    batch = CanonicalBatch(args.work)
    ids = batch.read_columns(["id"]).column(0).to_pylist()
    pos = {x: i for i, x in enumerate(ids)}
    planted = [(pos[a], pos[b]) for a, b in (ln.split("\t") for ln in args.pairs.read_text().splitlines())
               if a in pos and b in pos]
    edits = {b for _, b in planted}
    v = embed_table(batch, EmbeddingSpec(), cache_dir=args.work / "embeddings")
    with np.load(args.work / "exact_knn.npz") as g:
        rep, _ = representatives(v, g["sims"], g["ids"], np.zeros(len(v), dtype=bool), lambda i, j: True,
                                 threshold=NearDuplicateCheck().threshold)
    exact = set(np.flatnonzero(rep >= 0).tolist())
    exact_involved = exact | set(rep[rep >= 0].tolist())
    f = pq.read_table(args.work / "findings" / "near_duplicate.parquet").to_pylist()
    ours = {r["row"] for r in f if r["reason"] == "near_duplicate"}
    res: dict = {"records": len(ids), "planted_pairs": len(planted), "exact_flagged": len(exact),
                 "exact_involved": len(exact_involved)}
    rows = [overlap("tunegate (IVF)", ours, exact) | {"planted_found": round(len(ours & edits) / len(edits), 4)}]
    rows.append(overlap("exact flat (same threshold)", exact, exact)
                | {"planted_found": round(len(exact & edits) / len(edits), 4)})
    if args.datalab and args.datalab.exists():
        with np.load(args.datalab) as d:
            dl = set(d["near_duplicate"].tolist())
            dl_out = set(d["outlier"].tolist())
        rows.append(overlap("datalab near_duplicate (members of sets)", dl, exact_involved)
                    | {"planted_found": round(len(dl & edits) / len(edits), 4)})
        fo = pq.read_table(args.work / "findings" / "embedding_outlier.parquet").to_pylist()
        ours_out = {r["row"] for r in fo if r["reason"] == "embedding_outlier"}
        res["outliers"] = {"tunegate": len(ours_out), "datalab": len(dl_out), "both": len(ours_out & dl_out),
                           "tunegate_in_datalab": round(len(ours_out & dl_out) / max(len(ours_out), 1), 4)}
    if args.minhash and args.minhash.exists():
        with np.load(args.minhash) as m:
            mh = set(m["near_duplicate"].tolist())
        rows.append(overlap("datasketch MinHash LSH (J>=0.8)", mh, exact)
                    | {"planted_found": round(len(mh & edits) / len(edits), 4)})
    res["near_duplicate"] = rows
    return emit(res, args.out)


if __name__ == "__main__":
    sys.exit(main())
