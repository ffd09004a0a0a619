"""``tunegate_nightly_sharded`` with ``dag.test()``: mapped shards, then the merge; its verdict, outputs and
per-record placement equal ``tunegate_nightly``'s on the same input (the bundled sample night, one file cut into
three pieces)."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pyarrow.parquet as pq
import pytest

from tests.airflow.conftest import nightly_conf

pytestmark = [pytest.mark.airflow, pytest.mark.slow]

NIGHTLY, SHARDED = "tunegate_nightly", "tunegate_nightly_sharded"
NIGHT = datetime(2026, 3, 1, tzinfo=UTC)
SHARDS = 3


def _run(dagbag: Any, data_root: Path, dag_id: str, **params: Any) -> SimpleNamespace:
    # each DAG gets a history of its own, empty before this module: the session's other tests publish nights into
    # the default histories, and both runs must compare against the same (empty) past to be comparable
    history = data_root / "sharded-equality" / dag_id / "history"
    shutil.rmtree(history, ignore_errors=True)
    dag = dagbag.get_dag(dag_id)
    dagrun = dag.test(logical_date=NIGHT, run_conf=nightly_conf(history_dir=str(history), **params))
    run_dir = data_root / dag_id / "2026-03-01"
    return SimpleNamespace(dagrun=dagrun, run_dir=run_dir,
                           summary=json.loads((run_dir / "summary.json").read_text(encoding="utf-8")),
                           states=[(ti.task_id, ti.map_index, str(ti.state)) for ti in dagrun.get_task_instances()])


@pytest.fixture(scope="module")
def runs(dagbag: Any, data_root: Path) -> SimpleNamespace:
    return SimpleNamespace(whole=_run(dagbag, data_root, NIGHTLY),
                           sharded=_run(dagbag, data_root, SHARDED, shards=SHARDS))


def test_the_shards_ran_as_mapped_task_instances(runs: SimpleNamespace) -> None:
    assert str(runs.sharded.dagrun.state) == "success"
    shard_tis = sorted((m, s) for task, m, s in runs.sharded.states if task == "shard")
    assert shard_tis == [(i, "success") for i in range(SHARDS)]
    assert {t for t, _, _ in runs.sharded.states} == {"plan", "shard", "merge", "validate", "scan", "gate", "publish"}
    plan = json.loads((runs.sharded.run_dir / "work" / "shards" / "plan.json").read_text(encoding="utf-8"))
    assert plan["shards"] == SHARDS and plan["files"] == 1  # one file, cut into pieces


def test_the_sharded_verdict_and_counts_equal_the_unsharded(runs: SimpleNamespace) -> None:
    whole, sharded = runs.whole.summary, runs.sharded.summary
    assert whole["verdict"] == sharded["verdict"] == "quarantine"
    for key in ("total", "accepted", "quarantined", "rejected", "held", "reasons", "halt_reasons", "alerts",
                "check_status", "inputs"):
        assert sharded[key] == whole[key], key
    assert sharded["checks"].keys() == whole["checks"].keys()
    for name, check in whole["checks"].items():
        for key in ("flagged_records", "reasons"):
            assert sharded["checks"][name][key] == check[key], (name, key)
        # the same issues; a message may name the DAG's own history folder
        assert [{**i, "message": i["message"].replace(SHARDED, NIGHTLY)} for i in sharded["checks"][name]["issues"]
                ] == check["issues"], name


def test_every_record_lands_where_the_unsharded_run_put_it(runs: SimpleNamespace) -> None:
    whole, sharded = runs.whole.run_dir, runs.sharded.run_dir
    assert pq.read_table(sharded / "accepted.parquet").equals(pq.read_table(whole / "accepted.parquet"))
    columns = ["id", "content_sha256", "source_file", "source_line", "reasons", "findings"]
    assert (pq.read_table(sharded / "quarantine.parquet", columns=columns).to_pylist()
            == pq.read_table(whole / "quarantine.parquet", columns=columns).to_pylist())
    # every shard's malformed records, with their file and line
    assert (sharded / "rejected.jsonl").read_bytes() == (whole / "rejected.jsonl").read_bytes()
    assert runs.sharded.summary["rejected"] == 4


def test_the_sharded_night_published_its_own_asset_and_history(runs: SimpleNamespace) -> None:
    history = runs.sharded.summary["history"]
    assert history["batch_id"] == f"{SHARDED}/2026-03-01"
    assert history["added"] == runs.sharded.summary["accepted"] == runs.whole.summary["history"]["added"]
