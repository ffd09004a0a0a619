"""Project the sharded nightly DAG's wall time to 10M and 100M records on N workers, from one measured run.

    .venv/bin/python bench/scale/project.py bench/results/sharded-200k/results-workers-1-2.json [--workers 1 2 8 32 128]

Reads the sharded run of ``bench/scale/sharded.py`` with the fewest workers: the seconds of every shard (their sum
is the per-record work that spreads over workers), of the merge-side tasks (plan, merge, validate, scan, gate,
publish: one process each) and of each whole-batch check in the scan (its XCom). Each is scaled from the measured
record count by its cost model:

* linear (``n``): plan, shards, merge, validate, gate, publish, exact duplicates, outliers (over the kNN graph the
  near-duplicate check leaves), both poison scans (``poison_trigger``: 45 s at 200k -> 220 s at 1M measured on a
  quiet machine, bench/scale/RESULTS.md, exponent 0.98);
* ``n^1.5``: the near-duplicate check's IVF self-join (``nlist ~ 4 sqrt(n)`` cells, 16 probed: each vector is
  compared with ``4 sqrt(n)`` others, and assigned among ``4 sqrt(n)`` centroids).

Shards run ``workers`` at a time; everything after them runs once. Prints a markdown table (hours).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

LINEAR_TASKS = ("plan", "merge", "validate", "gate", "publish")
SUPERLINEAR = {"near_duplicate": 1.5}


def stages(run: dict[str, Any]) -> tuple[float, dict[str, float]]:
    """``(summed shard seconds, serial stage -> seconds)`` of one sharded run."""
    tasks = run["tasks"]
    shard_s = sum(t["seconds"] for t in tasks if t["task"] == "shard")
    serial = {name: sum(t["seconds"] for t in tasks if t["task"] == name) for name in LINEAR_TASKS}
    checks = run.get("scan_check_seconds") or {}
    scan = sum(t["seconds"] for t in tasks if t["task"] == "scan")
    serial.update({f"scan:{k}": float(v) for k, v in checks.items()})
    serial["scan:overhead"] = max(0.0, scan - sum(checks.values()))
    return shard_s, serial


def project(shard_s: float, serial: dict[str, float], n0: int, n: int, workers: int) -> dict[str, float]:
    scale = n / n0
    out = {"shards": shard_s * scale / workers}
    for name, seconds in serial.items():
        exponent = SUPERLINEAR.get(name.removeprefix("scan:"), 1.0)
        out[name] = seconds * scale ** exponent
    out["total"] = sum(out.values())
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", type=Path, nargs="+")
    ap.add_argument("--records", type=int, default=200_000, help="records of the measured input")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 8, 32, 128])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000_000, 100_000_000])
    args = ap.parse_args()
    runs = [r for path in args.results for r in json.loads(path.read_text(encoding="utf-8"))["runs"]]
    base = min(runs, key=lambda r: r["workers"])
    shard_s, serial = stages(base["sharded"])
    print(f"measured ({args.records:,} records, {base['workers']} worker(s)): shards {shard_s:.0f} s in all; "
          + ", ".join(f"{k} {v:.0f} s" for k, v in serial.items()))
    names = ["shards", *serial]
    print("\n| records | workers | total h | " + " | ".join(names) + " |")
    print("|---|---|---|" + "---|" * len(names))
    for n in args.sizes:
        for w in args.workers:
            p = project(shard_s, serial, args.records, n, w)
            print(f"| {n:,} | {w} | {p['total'] / 3600:.1f} | "
                  + " | ".join(f"{p[k] / 3600:.2f}" for k in names) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
