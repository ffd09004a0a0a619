"""``tunegate_nightly_sharded`` as a DAG file: its tasks, the mapped shard task, its params."""

from __future__ import annotations

from typing import Any

import pytest

from tests.airflow.conftest import REPO

pytestmark = pytest.mark.airflow

SHARDED = "tunegate_nightly_sharded"


def test_sharded_dag_shape(dagbag: Any) -> None:
    assert dagbag.import_errors == {}
    dag = dagbag.get_dag(SHARDED)
    assert [t.task_id for t in dag.topological_sort()] == [
        "plan", "shard", "merge", "validate", "scan", "gate", "publish"]
    shard = dag.get_task("shard")
    assert type(shard).__name__ == "MappedOperator"  # one task instance per shard, each with its own retries
    assert shard.partial_kwargs["retries"] == 3
    assert set(dag.params) == {"input_uri", "policy_file", "checks", "history_dir", "storage_conn_id", "shards"}
    assert dag.params["shards"] is None and dag.params["input_uri"] == str(REPO / "samples" / "nightly")
    assert dag.max_active_runs == 1 and dag.catchup is False
    publish = dag.get_task("publish")
    assert [a.name for a in publish.outlets] == [f"{SHARDED}_accepted"]
