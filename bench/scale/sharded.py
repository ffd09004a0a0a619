"""Sharded vs unsharded nightly DAG on one input, on a production-shaped Airflow with 1 and with 2 Celery workers.

    .venv/bin/python bench/faiss/corpus.py 200000 /tmp/c200k.jsonl --seed 1
    .venv/bin/python bench/scale/sharded.py /tmp/c200k.jsonl --shards 4 --workers 1 2 --out bench/results/sharded-200k

For each worker count: starts the stack of tests/integration (PostgreSQL, CeleryExecutor on Redis, scheduler,
dag-processor, api-server; N worker processes of one task slot each), runs ``tunegate_nightly`` and then
``tunegate_nightly_sharded`` (``--shards``) on the same input, one after the other, and records each run's
wall time (the DAG run's start to end), every task's duration, each whole-batch check's seconds (the sharded
scan's XCom), and whether the sharded outputs equal the unsharded ones (verdict, counts, accepted table,
quarantine placement and reasons, rejected records). Writes OUT/results-workers-*.json and prints a table.

Needs PostgreSQL and Redis on loopback (tests/integration/ensure_services.sh); exits 77 (skipped) without them.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
import urllib.parse
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "src"))

from tests.integration.airflow_stack import AirflowStack, services_problem  # noqa: E402

NIGHTLY, SHARDED = "tunegate_nightly", "tunegate_nightly_sharded"
SKIP = 77


def _ts(value: str | None) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() if value else float("nan")


def _run_path(dag_id: str, run_id: str, tail: str = "") -> str:
    return f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}{tail}"


def run_dag(stack: AirflowStack, dag_id: str, conf: dict[str, Any], timeout: float) -> dict[str, Any]:
    def parsed() -> dict[str, Any] | None:
        status, body = stack.api("GET", f"/api/v2/dags/{dag_id}")
        return body if status == 200 else None

    dag = stack.wait_for(parsed, 300, f"DAG {dag_id} to be parsed")
    run_id = f"bench__{dag_id}__{stack.token}"
    status, body = stack.api("POST", f"/api/v2/dags/{dag_id}/dagRuns",
                             {"dag_run_id": run_id, "logical_date": dag.get("next_dagrun_logical_date"), "conf": conf})
    assert status == 200, body
    stack.api("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})

    def done() -> dict[str, Any] | None:
        _, run = stack.api("GET", _run_path(dag_id, run_id))
        return run if run["state"] in ("success", "failed") else None

    run = stack.wait_for(done, timeout, f"{dag_id} run", interval=2.0)
    _, body = stack.api("GET", _run_path(dag_id, run_id, "/taskInstances?limit=500"))
    tasks = [{"task": t["task_id"], "map_index": t["map_index"], "state": t["state"], "try": t["try_number"],
              "seconds": round(_ts(t["end_date"]) - _ts(t["start_date"]), 1),
              "start": t["start_date"], "end": t["end_date"]} for t in body["task_instances"]]
    scan_seconds: dict[str, float] = {}
    if dag_id == SHARDED:
        status, xcom = stack.api("GET", _run_path(dag_id, run_id, "/taskInstances/scan/xcomEntries/return_value"))
        if status == 200:
            value = xcom.get("value")
            value = json.loads(value) if isinstance(value, str) else value
            scan_seconds = dict((value or {}).get("seconds") or {})
    date = (run.get("logical_date") or run["run_after"])[:10]
    wall = round(_ts(run["end_date"]) - _ts(run["start_date"]), 1)
    return {"dag_id": dag_id, "state": run["state"], "wall_s": wall, "scan_check_seconds": scan_seconds,
            "tasks": sorted(tasks, key=lambda t: (t["start"] or "", t["map_index"])),
            "run_dir": str(stack.root / "data" / dag_id / date)}


def compare(sharded: Path, whole: Path) -> dict[str, Any]:
    """What the sharded night has in common with the unsharded one (each key True when equal)."""
    import pyarrow.parquet as pq

    a, b = (json.loads((d / "summary.json").read_text(encoding="utf-8")) for d in (sharded, whole))
    out: dict[str, Any] = {k: a.get(k) == b.get(k) for k in ("verdict", "total", "accepted", "quarantined",
                                                              "rejected", "reasons", "inputs")}
    out["verdict_value"] = a.get("verdict")
    counts = ("total", "accepted", "quarantined", "rejected")
    out["counts"] = {k: a.get(k) for k in counts}
    accepted = [pq.read_table(d / "accepted.parquet") for d in (sharded, whole)]
    out["accepted_table"] = accepted[0].equals(accepted[1])
    columns = ["id", "content_sha256", "source_file", "source_line", "reasons"]
    out["quarantine_placement"] = (pq.read_table(sharded / "quarantine.parquet", columns=columns).to_pylist()
                                   == pq.read_table(whole / "quarantine.parquet", columns=columns).to_pylist())
    out["rejected_records"] = (sharded / "rejected.jsonl").read_bytes() == (whole / "rejected.jsonl").read_bytes()
    out["all_equal"] = all(v for k, v in out.items() if isinstance(v, bool))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("input")
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("--reference", type=Path,
                    help="run directory of an earlier unsharded night on the same input: compare with it instead of "
                         "running the unsharded DAG again (its tasks are a chain: one runs at a time whatever the "
                         "worker count)")
    args = ap.parse_args()

    def interrupt(signum: int, frame: Any) -> None:  # a TERM stops the stack (its finally) before exiting
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)
    problem = services_problem()
    if problem:
        print(f"skipped: {problem}")
        return SKIP
    args.out.mkdir(parents=True, exist_ok=True)
    results: list[dict[str, Any]] = []
    for workers in args.workers:
        root = args.out / f"workers-{workers}"
        stack = AirflowStack(root=root, dags_folder=REPO / "dags", extra_env={"TUNEGATE_DATA_ROOT": str(root / "data")},
                             celery_workers=workers, worker_concurrency=1)
        try:
            t = time.monotonic()
            stack.start()
            print(f"workers={workers}: stack up in {time.monotonic() - t:.0f} s", flush=True)
            if args.reference:
                whole = {"dag_id": NIGHTLY, "state": "success", "wall_s": None, "tasks": [],
                         "run_dir": str(args.reference), "reference": True}
            else:
                whole = run_dag(stack, NIGHTLY, {"input_uri": args.input}, args.timeout)
            print(f"  {NIGHTLY}: {whole['state']} in {whole['wall_s']} s", flush=True)
            sharded = run_dag(stack, SHARDED, {"input_uri": args.input, "shards": args.shards}, args.timeout)
            print(f"  {SHARDED}: {sharded['state']} in {sharded['wall_s']} s", flush=True)
            same = compare(Path(sharded["run_dir"]), Path(whole["run_dir"])) if "success" == whole["state"] == \
                sharded["state"] else {"all_equal": False}
            print(f"  equal: {same}", flush=True)
            results.append({"workers": workers, "shards": args.shards, "unsharded": whole, "sharded": sharded,
                            "equal": same})
        finally:
            stack.stop()
        name = f"results-workers-{'-'.join(map(str, args.workers))}.json"
        (args.out / name).write_text(json.dumps({"input": args.input, "runs": results}, indent=1) + "\n",
                                     encoding="utf-8")
    print("\n| workers | unsharded wall s | sharded wall s | sharded: plan / shards (each) / merge / validate / scan / "
          "gate / publish s | equal |")
    print("|---|---|---|---|---|")
    for r in results:
        tasks = r["sharded"]["tasks"]

        def secs(name: str, tasks: list[dict[str, Any]] = tasks) -> str:
            return "+".join(str(t["seconds"]) for t in tasks if t["task"] == name)

        steps = " / ".join(secs(n) for n in ("plan", "shard", "merge", "validate", "scan", "gate", "publish"))
        print(f"| {r['workers']} | {r['unsharded']['wall_s']} | {r['sharded']['wall_s']} | {steps} | "
              f"{r['equal'].get('all_equal')} |")
    return 0 if all(r["equal"].get("all_equal") for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
