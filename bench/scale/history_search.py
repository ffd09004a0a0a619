"""A night's search of its history: tunegate's cell-by-cell IVF search against FAISS's own, same run.

    python bench/scale/history_search.py HISTORY WORK [--k 10] [--nprobe 8] [--threshold 0.95]

HISTORY: a history directory (``tunegate history update``); WORK: a night's work directory (``tunegate scan
--keep-work``: its ``canonical.parquet`` and embedding cache). Prints both wall times, their ratio, and how far
the answers agree: top-1 position, the largest score difference, and the (query, history record) pairs at or
above ``--threshold`` (the near-duplicate candidates) found by one and not the other. Equal scores (exact
copies in the history) may be returned in another order, so a few positions differ where scores tie.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def main() -> int:
    import faiss
    import numpy as np

    from tunegate.core.checks import CanonicalBatch
    from tunegate.core.embeddings import embed_table
    from tunegate.core.history import open_history
    from tunegate.core.vector_index import search

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("history", type=Path)
    ap.add_argument("work", type=Path)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--nprobe", type=int, default=8)
    ap.add_argument("--threshold", type=float, default=0.95)
    args = ap.parse_args()

    history = open_history(args.history)
    assert history.spec is not None and history.index is not None, "an empty history"
    vectors = embed_table(CanonicalBatch(args.work), history.spec, cache_dir=args.work / "embeddings")
    print(f"{len(vectors):,} queries against {history.count:,} history records ({history.kind}), k={args.k}, "
          f"nprobe={args.nprobe}, {faiss.omp_get_max_threads()} threads")

    ivf = faiss.extract_index_ivf(history.index)
    ivf.nprobe = args.nprobe
    started = time.perf_counter()
    ref_sims, ref_ids = history.index.search(np.ascontiguousarray(vectors, dtype=np.float32), args.k)
    peer = time.perf_counter() - started
    started = time.perf_counter()
    sims, ids = search(history.index, vectors, args.k, args.nprobe)
    ours = time.perf_counter() - started
    print(f"FAISS search (per query):  {peer:7.1f} s")
    print(f"tunegate (cell by cell):   {ours:7.1f} s   {peer / ours:.2f}x")

    finite = np.isfinite(sims) & np.isfinite(ref_sims)
    pairs = {(int(r), int(ids[r, c])) for r, c in np.argwhere(sims >= args.threshold)}
    ref_pairs = {(int(r), int(ref_ids[r, c])) for r, c in np.argwhere(ref_sims >= args.threshold)}
    print(f"top-1 position the same: {np.mean(ids[:, 0] == ref_ids[:, 0]):.4%}; largest score difference "
          f"{np.abs(sims[finite] - ref_sims[finite]).max():.2e}")
    print(f"pairs >= {args.threshold}: {len(ref_pairs):,} (FAISS), {len(pairs):,} (tunegate); only FAISS "
          f"{len(ref_pairs - pairs):,}, only tunegate {len(pairs - ref_pairs):,}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
