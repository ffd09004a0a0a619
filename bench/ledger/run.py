"""What the contributor ledger and source diversity cost: a 40k-record night (the bundled slices, recycled with a
numbered suffix so they are not exact duplicates, 200 contributors assigned in turn), and loading a year of nights.

    python bench/ledger/run.py [--records 40000] [--nights 365] [--contributors 1000] [--work DIR]

Prints one JSON object: the contributor_policy and source_diversity check times, the gate's comparison with the
ledger (``contributor_summary``), the ledger update at publish (``record_night``) and ``load_ledger`` over
``--nights`` synthetic nights of ``--contributors`` contributors each (counts only: the cost is the files).
"""

from __future__ import annotations

import argparse
import gzip
import json
import tempfile
import time
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parents[2] / "tests" / "data"


def night_records(n: int, contributors: int) -> list[dict[str, Any]]:
    base = []
    for name in ("superni_slice.jsonl.gz", "superni_toxicity_controls.jsonl.gz", "self_instruct_slice.jsonl.gz"):
        with gzip.open(DATA / name, "rt", encoding="utf-8") as f:
            base += [json.loads(line) for line in f]
    out = []
    for i in range(n):
        r = dict(base[i % len(base)])
        cycle = i // len(base)
        if cycle:
            r["id"], r["instruction"] = f"{r['id']}-{cycle}", f"{r['instruction']} ({cycle})"
        r["contributor"] = f"contributor-{i % contributors:04d}"
        out.append(r)
    return out


def synthetic_nights(history: Path, nights: int, contributors: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tunegate.core.ledger.store import _META_KEY, _schema, night_path

    for n in range(nights):
        batch = f"bench/{n:04d}"
        names = [f"contributor-{c:04d}" for c in range(contributors)]
        table = pa.table({"kind": ["contributor"] * contributors, "name": names, "submitted": [40] * contributors,
                          "accepted": [38] * contributors, "quarantined": [2] * contributors,
                          "flagged": [1] * contributors,
                          "reasons": [[{"reason": "exact_duplicate", "records": 1},
                                       {"reason": "near_duplicate", "records": 1}]] * contributors}, schema=_schema())
        meta = {"format": 1, "batch_id": batch, "published": f"2026-01-01T00:{n:04d}",
                "first_published": f"2026-01-01T00:{n:04d}"}
        table = table.replace_schema_metadata({_META_KEY: json.dumps(meta).encode()})
        path = night_path(history, batch)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path, compression="zstd")


def main() -> None:
    from tunegate.core.ledger import contributor_summary, load_ledger, record_night
    from tunegate.core.pipeline import scan
    from tunegate.core.policy import GatePolicy

    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=40_000)
    parser.add_argument("--nights", type=int, default=365)
    parser.add_argument("--contributors", type=int, default=1000)
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="ledger-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    history = work / "history"
    inputs = work / "night.jsonl"
    inputs.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in night_records(args.records, 200)),
                      encoding="utf-8")
    policy = GatePolicy.from_mapping({"checks": ["exact_duplicate", "contributor_policy", "source_diversity"],
                                      "suites": []})
    started = time.perf_counter()
    summary = scan([str(inputs)], work / "night", history_dir=str(history), policy=policy)
    scan_seconds = time.perf_counter() - started
    started = time.perf_counter()
    contributor_summary(summary, work / "night")
    gate_compare = time.perf_counter() - started
    started = time.perf_counter()
    update = record_night(history, work / "night", summary, batch_id="again")
    publish_seconds = time.perf_counter() - started
    year = work / "year"
    synthetic_nights(year, args.nights, args.contributors)
    started = time.perf_counter()
    ledger = load_ledger(year)
    load_seconds = time.perf_counter() - started
    print(json.dumps({
        "records": summary["total"], "contributors_tonight": summary["checks"]["contributor_policy"]["metrics"][
            "contributors"],
        "scan_seconds_total": round(scan_seconds, 2),
        "contributor_policy_seconds": summary["checks"]["contributor_policy"]["metrics"]["seconds"],
        "source_diversity_seconds": summary["checks"]["source_diversity"]["metrics"].get("seconds"),
        "gate_contributor_summary_seconds": round(gate_compare, 3),
        "record_night_seconds": round(publish_seconds, 3), "record_night": update,
        "load_ledger_nights": len(ledger.nights), "load_ledger_entries": len(ledger.entries),
        "load_ledger_seconds": round(load_seconds, 3),
    }, indent=1))


if __name__ == "__main__":
    main()
