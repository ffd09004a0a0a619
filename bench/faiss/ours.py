"""tunegate's near_duplicate + embedding_outlier checks on one batch, timed stage by stage.

    python bench/faiss/ours.py INPUT.jsonl WORK [--history DIR] [--update-history] [--out RESULT.json]

Ingests INPUT into WORK (timed apart: it is not part of the checks), runs the checks as `tunegate scan`
would (embedding cache in WORK, so the outlier check reuses the vectors and the kNN graph), optionally
adds the batch to the history afterwards, and prints a JSON line with the timings, counts and peak RSS.
Run it under /usr/bin/time -v for the whole process's peak memory.
"""

from __future__ import annotations

import argparse
import logging
import resource
import sys
import time
from pathlib import Path

from _result import emit  # bench/faiss/_result.py (scripts run from this folder)

from tunegate.core.checks import CanonicalBatch, build_check, save_result
from tunegate.core.ingest import CANONICAL_FILE, ingest


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("input")
    ap.add_argument("work", type=Path)
    ap.add_argument("--history")
    ap.add_argument("--update-history", action="store_true")
    ap.add_argument("--no-outlier", action="store_true")
    ap.add_argument("--threshold", type=float, default=None)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    res: dict = {"input": args.input}
    t0 = time.perf_counter()
    if not (args.work / CANONICAL_FILE).exists():
        ingest([args.input], args.work)
    res["ingest_s"] = round(time.perf_counter() - t0, 1)
    batch = CanonicalBatch(args.work)
    res["records"] = batch.num_rows
    opts = {"history_dir": args.history} if args.history else {}
    nd_opts = dict(opts, **({"threshold": args.threshold} if args.threshold else {}))
    checks = [build_check("near_duplicate", **nd_opts)]
    if not args.no_outlier:
        checks.append(build_check("embedding_outlier", **opts))
    t_checks = time.perf_counter()
    for check in checks:
        t = time.perf_counter()
        result = check.run(batch)
        save_result(args.work, result)
        res[f"{check.name}_s"] = round(time.perf_counter() - t, 1)
        res[f"{check.name}_counts"] = result.counts()
        res[f"{check.name}_metrics"] = {k: v for k, v in result.metrics.items() if k != "embedding"}
    res["checks_s"] = round(time.perf_counter() - t_checks, 1)
    if args.update_history and args.history:
        from tunegate.core.history import update_history

        t = time.perf_counter()
        res["update_history"] = update_history(args.history, args.work / CANONICAL_FILE, batch_id=args.work.name,
                                               cache_dir=args.work / "embeddings")
        res["update_history_s"] = round(time.perf_counter() - t, 1)
    res["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return emit(res, args.out)


if __name__ == "__main__":
    sys.exit(main())
