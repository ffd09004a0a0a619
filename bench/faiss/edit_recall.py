"""Recall of the planted light edits by near_duplicate, from a work directory that ours.py filled.

    python bench/faiss/edit_recall.py WORK PAIRS.tsv [--out RESULT.json]

``PAIRS.tsv`` (from corpus.py) lists ``original_id<TAB>edited_id``. An edit is *found* when the edited record
is flagged ``near_duplicate``, *with its original* when its representative is the original or the
original's own representative (the same cluster). Prints a JSON line; for the edits missed, the
verification reasons that candidate pairs were rejected for are in the check's metrics (ours.py output).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pyarrow.parquet as pq
from _result import emit  # bench/faiss/_result.py (scripts run from this folder)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("work", type=Path)
    ap.add_argument("pairs", type=Path)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    ids = pq.read_table(args.work / "canonical.parquet", columns=["id"]).column(0).to_pylist()
    findings = pq.read_table(args.work / "findings" / "near_duplicate.parquet").to_pylist()
    rep: dict[str, str] = {}
    for f in findings:
        if f["reason"] != "near_duplicate":
            continue
        detail = json.loads(f["detail"]) if isinstance(f["detail"], str) else f["detail"]
        rep[ids[f["row"]]] = str(detail["representative"])
    pairs = [line.rstrip("\n").split("\t") for line in args.pairs.read_text(encoding="utf-8").splitlines() if line]
    found = sum(edit in rep for _, edit in pairs)
    with_original = sum(rep.get(edit) in (orig, rep.get(orig, orig)) for orig, edit in pairs)
    res = {"planted": len(pairs), "found": found, "recall": round(found / max(len(pairs), 1), 4),
           "found_with_original": with_original,
           "recall_with_original": round(with_original / max(len(pairs), 1), 4),
           "flagged_near_duplicate": len(rep), "records": len(ids)}
    return emit(res, args.out)


if __name__ == "__main__":
    sys.exit(main())
