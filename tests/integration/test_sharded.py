"""The sharded nightly DAG on a production-shaped Airflow: PostgreSQL, CeleryExecutor with two Celery workers (one
task slot each) on Redis, scheduler, dag-processor and api-server as separate processes.

``tunegate_nightly`` and ``tunegate_nightly_sharded`` (4 shards, one mapped task instance each) are triggered
through the REST API on the same input, the bundled sample night; the test asserts that both workers ran shards,
that the sharded night's verdict, accepted table, quarantine placement and rejected records equal the unsharded
night's, and that clearing one shard reruns that shard alone (its siblings keep their first try) and the merge
and gate after it give the same result again.
"""

from __future__ import annotations

import json
import os
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pyarrow.parquet as pq
import pytest

from tests.integration.airflow_stack import AirflowStack
from tests.integration.conftest import REPO

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]

NIGHTLY, SHARDED = "tunegate_nightly", "tunegate_nightly_sharded"
SAMPLE = REPO / "samples" / "nightly"
SHARDS = 4
DAGS_PARSED_S = 240
RUN_DONE_S = 600


@pytest.fixture(scope="module")
def two_workers(services: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowStack]:
    root = tmp_path_factory.mktemp("airflow_sharded")
    dags = Path(os.environ.get("TUNEGATE_IT_DAGS_FOLDER") or REPO / "dags").resolve()
    stack = AirflowStack(root=root, dags_folder=dags, extra_env={"TUNEGATE_DATA_ROOT": str(root / "data")},
                         celery_workers=2, worker_concurrency=1)
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()
    assert not stack.leftover, f"processes survived SIGKILL: {stack.leftover}"


def _path(dag_id: str, run_id: str, tail: str = "") -> str:
    return f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}{tail}"


def _finished(stack: AirflowStack, dag_id: str, run_id: str) -> dict[str, Any] | None:
    status, body = stack.api("GET", _path(dag_id, run_id))
    assert status == 200, body
    return body if body["state"] in ("success", "failed") else None


def task_instances(stack: AirflowStack, dag_id: str, run_id: str) -> list[dict[str, Any]]:
    _, body = stack.api("GET", _path(dag_id, run_id, "/taskInstances?limit=100"))
    return list(body.get("task_instances", [])) if isinstance(body, dict) else []


def _logs(stack: AirflowStack, dag_id: str) -> str:
    logs = sorted((stack.home / "logs").rglob(f"dag_id={dag_id}/**/*.log"))
    return "\n".join(f"--- {p} ---\n" + "\n".join(p.read_text(errors="replace").splitlines()[-30:]) for p in logs)


def wait_run(stack: AirflowStack, dag_id: str, run_id: str) -> dict[str, Any]:
    try:
        run = stack.wait_for(lambda: _finished(stack, dag_id, run_id), RUN_DONE_S, f"{dag_id} run {run_id}")
    except TimeoutError as exc:
        states = {(t["task_id"], t["map_index"]): t["state"] for t in task_instances(stack, dag_id, run_id)}
        raise TimeoutError(f"{exc}\ntask states: {states}\n{_logs(stack, dag_id)}") from None
    assert run["state"] == "success", f"{dag_id} {run['state']}\n{_logs(stack, dag_id)}"
    return run


def trigger(stack: AirflowStack, dag_id: str, conf: dict[str, Any]) -> str:
    dag = stack.wait_for(lambda: _dag(stack, dag_id), DAGS_PARSED_S, f"DAG {dag_id} to be parsed")
    run_id = f"it__{dag_id}__{stack.token}"
    status, body = stack.api("POST", f"/api/v2/dags/{dag_id}/dagRuns",
                             {"dag_run_id": run_id, "logical_date": dag.get("next_dagrun_logical_date"), "conf": conf})
    assert status == 200, body
    status, body = stack.api("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})
    assert status == 200 and body["is_paused"] is False, body
    return run_id


def _dag(stack: AirflowStack, dag_id: str) -> dict[str, Any] | None:
    status, body = stack.api("GET", f"/api/v2/dags/{dag_id}")
    return body if status == 200 else None


def run_dir(stack: AirflowStack, dag_id: str, run: dict[str, Any]) -> Path:
    return stack.root / "data" / dag_id / (run.get("logical_date") or run["run_after"])[:10]


@pytest.fixture(scope="module")
def nights(two_workers: AirflowStack) -> SimpleNamespace:
    conf = {"input_uri": str(SAMPLE), "history_dir": ""}
    t0 = time.monotonic()
    # the sharded night first, alone: its four shards have both workers' slots to themselves
    sharded_id = trigger(two_workers, SHARDED, {**conf, "shards": SHARDS})
    sharded = wait_run(two_workers, SHARDED, sharded_id)
    t1 = time.monotonic()
    whole_id = trigger(two_workers, NIGHTLY, conf)
    whole = wait_run(two_workers, NIGHTLY, whole_id)
    print(f"\nsharded integration: sharded night {t1 - t0:.1f} s, unsharded night {time.monotonic() - t1:.1f} s "
          f"(both including parse and scheduling); logs: {two_workers.logs}")
    return SimpleNamespace(whole=run_dir(two_workers, NIGHTLY, whole), sharded=run_dir(two_workers, SHARDED, sharded),
                           sharded_id=sharded_id)


def _summary(folder: Path) -> dict[str, Any]:
    return dict(json.loads((folder / "summary.json").read_text(encoding="utf-8")))


def assert_same_night(sharded: Path, whole: Path) -> None:
    a, b = _summary(sharded), _summary(whole)
    assert a["verdict"] == b["verdict"] == "quarantine"
    for key in ("total", "accepted", "quarantined", "rejected", "reasons", "halt_reasons", "inputs"):
        assert a[key] == b[key], key
    assert pq.read_table(sharded / "accepted.parquet").equals(pq.read_table(whole / "accepted.parquet"))
    columns = ["id", "content_sha256", "source_file", "source_line", "reasons"]
    assert (pq.read_table(sharded / "quarantine.parquet", columns=columns).to_pylist()
            == pq.read_table(whole / "quarantine.parquet", columns=columns).to_pylist())
    assert (sharded / "rejected.jsonl").read_bytes() == (whole / "rejected.jsonl").read_bytes()


def test_the_shards_ran_as_mapped_tasks_on_both_workers(two_workers: AirflowStack, nights: SimpleNamespace) -> None:
    shards = [t for t in task_instances(two_workers, SHARDED, nights.sharded_id) if t["task_id"] == "shard"]
    assert sorted((t["map_index"], t["state"]) for t in shards) == [(i, "success") for i in range(SHARDS)]
    # each Celery worker (its own process, one slot) logged the shards it executed: both took some
    ran = {name: two_workers.tail(name, 100000).count(f"dag_id={SHARDED}/run_id={nights.sharded_id}/task_id=shard/")
           for name in ("celery-worker", "celery-worker-2")}
    assert sum(ran.values()) == SHARDS and all(n > 0 for n in ran.values()), ran


def test_the_sharded_night_equals_the_unsharded_one(nights: SimpleNamespace) -> None:
    assert_same_night(nights.sharded, nights.whole)
    assert _summary(nights.sharded)["rejected"] == 4


def test_a_cleared_shard_reruns_alone(two_workers: AirflowStack, nights: SimpleNamespace) -> None:
    shards_dir = nights.sharded / "work" / "shards"
    before = {i: (shards_dir / f"{i:05d}" / "shard.json").stat().st_mtime_ns for i in range(SHARDS)}
    status, body = two_workers.api("POST", f"/api/v2/dags/{SHARDED}/clearTaskInstances", {
        "dry_run": False, "dag_run_id": nights.sharded_id, "task_ids": [["shard", 2]], "include_downstream": True,
        "only_failed": False, "reset_dag_runs": True})
    assert status == 200, body
    assert {(t["task_id"], t["map_index"]) for t in body["task_instances"]} == {
        ("shard", 2), ("merge", -1), ("validate", -1), ("scan", -1), ("gate", -1), ("publish", -1)}
    time.sleep(5)  # the run goes back to queued, then running
    wait_run(two_workers, SHARDED, nights.sharded_id)
    tries = {t["map_index"]: t["try_number"] for t in task_instances(two_workers, SHARDED, nights.sharded_id)
             if t["task_id"] == "shard"}
    assert tries == {0: 1, 1: 1, 2: 2, 3: 1}
    after = {i: (shards_dir / f"{i:05d}" / "shard.json").stat().st_mtime_ns for i in range(SHARDS)}
    assert [i for i in range(SHARDS) if after[i] != before[i]] == [2]
    assert_same_night(nights.sharded, nights.whole)
