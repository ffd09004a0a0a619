"""The DAG files: they import without errors, fast, without heavy libraries, and are wired as documented."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta
from typing import Any

import pytest

from tests.airflow.conftest import DAGS, REPO

pytestmark = pytest.mark.airflow

NIGHTLY, FINETUNE, REVIEW = "tunegate_nightly", "tunegate_finetune", "tunegate_review"
POSTTUNE = "tunegate_posttune_audit"


def test_dagbag_imports_the_dags_without_errors(dagbag: Any) -> None:
    assert dagbag.import_errors == {}
    assert {NIGHTLY, FINETUNE, REVIEW, POSTTUNE} <= set(dagbag.dag_ids)
    for stat in dagbag.dagbag_stats:
        assert stat.duration < timedelta(seconds=2), stat  # parse time, all DAGs of the file


@pytest.mark.slow  # a fresh interpreter importing Airflow: seconds
def test_dag_files_parse_in_milliseconds_without_heavy_imports() -> None:
    # A fresh interpreter: in this one, other tests have long imported pyarrow and GX.
    probe = f"""
import json, runpy, sys, time
import airflow.sdk
from airflow.sdk import DAG, Asset, Param, BaseOperator, task
times = {{}}
for name in ("{NIGHTLY}", "{FINETUNE}", "{REVIEW}", "{POSTTUNE}"):
    t = time.perf_counter()
    runpy.run_path("{DAGS}/" + name + ".py")
    times[name] = time.perf_counter() - t
heavy = [m for m in ("pyarrow", "pandas", "great_expectations", "faiss", "sklearn", "datasets", "torch")
         if m in sys.modules]
print(json.dumps({{"times": times, "heavy": heavy}}))
"""
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=REPO,
                         timeout=120)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["heavy"] == []
    # ~0.5 s measured: ~0.1 s of it is the DAG file; the rest is Airflow registering the installed providers'
    # asset URI handlers when the first Asset is built (the Amazon provider's imports boto3). Generous for CI.
    assert result["times"][NIGHTLY] < 2.0, result
    assert result["times"][FINETUNE] < 1.0, result
    assert result["times"][REVIEW] < 1.0, result
    assert result["times"][POSTTUNE] < 1.0, result


def test_nightly_dag_shape(dagbag: Any) -> None:
    dag = dagbag.get_dag(NIGHTLY)
    assert [t.task_id for t in dag.topological_sort()] == ["ingest", "validate", "scan", "gate", "publish"]
    assert dag.catchup is False
    assert dag.dagrun_timeout == timedelta(hours=6)
    assert set(dag.params) == {"input_uri", "policy_file", "checks", "history_dir", "storage_conn_id"}
    assert dag.params["input_uri"] == str(REPO / "samples" / "nightly")
    assert dag.render_template_as_native_obj is True  # a list param reaches the operator as a list
    # the Asset is emitted by the last task, after the night entered the history; the gate emits nothing
    assert [o.name for o in dag.get_task("publish").outlets] == ["tunegate_nightly_accepted"]
    assert dag.get_task("gate").outlets == []
    assert all(t.retries == 3 for t in dag.tasks)


def test_finetune_dag_is_scheduled_on_accepted_or_released_batches(dagbag: Any) -> None:
    from airflow.sdk import AssetAny

    from tunegate.operators import accepted_batch_asset, released_batch_asset

    dag = dagbag.get_dag(FINETUNE)
    condition = dag.timetable.asset_condition
    assert isinstance(condition, AssetAny)  # either event starts a run
    assert list(condition.objects) == [accepted_batch_asset(), released_batch_asset()]
    assert released_batch_asset().name == "tunegate_nightly_released"
    assert released_batch_asset().uri == "tunegate://tunegate_nightly/released"
    assert [t.task_id for t in dag.topological_sort()] == ["batch", "train"]
    assert [o.name for o in dag.get_task("train").outlets] == ["tunegate_nightly_candidate_model"]


def test_posttune_audit_dag_is_scheduled_on_the_candidate_and_vets_on_pass(dagbag: Any) -> None:
    from tunegate.operators import candidate_model_asset, vetted_model_asset

    dag = dagbag.get_dag(POSTTUNE)
    assert list(dag.timetable.asset_condition.objects) == [candidate_model_asset()]
    assert candidate_model_asset().name == "tunegate_nightly_candidate_model"
    assert set(dag.params) == {"model_conn_id", "candidate_dir", "heldout_uri", "probe_options"}
    assert all(dag.params[p] is None for p in dag.params)  # the triggering event's candidate, its connection
    assert dag.render_template_as_native_obj is True  # probe_options reach the operator as a mapping
    [task] = dag.tasks
    assert (task.task_id, type(task).__name__) == ("audit", "PostTuneAuditOperator")
    # a concrete Asset: Airflow emits it on success only, and a failed audit fails the task
    assert [o.name for o in task.outlets] == [vetted_model_asset().name] == ["tunegate_nightly_model_vetted"]
    assert task.retries == 3 and dag.catchup is False and dag.max_active_runs == 1


def test_review_dag_is_manual_with_the_decision_as_params(dagbag: Any) -> None:
    from airflow.sdk import AssetAlias

    dag = dagbag.get_dag(REVIEW)
    assert dag.schedule is None and dag.max_active_runs == 1  # triggered by hand, one at a time
    assert set(dag.params) == {"night", "action", "ids", "reason", "phrase", "by", "why", "override", "pipeline"}
    assert dag.params["pipeline"] == "tunegate_nightly" and dag.params["action"] == "release"
    assert dag.params.get_param("action").schema["enum"] == ["release", "confirm"]
    assert dag.render_template_as_native_obj is True  # ids reach the operator as a list
    assert "Params:" in dag.doc_md and "audit.jsonl" in dag.doc_md
    [task] = dag.tasks
    assert (task.task_id, type(task).__name__) == ("decide", "ReviewOperator")
    # a release is announced through the alias (the pipeline's released Asset is known when the task runs,
    # and a confirmation must emit nothing)
    assert task.outlets == [AssetAlias(name="tunegate_released", group="tunegate")]
    assert task.retries == 2


def test_review_operator_refuses_a_concrete_asset_outlet() -> None:
    from tunegate.operators import ReviewOperator, released_batch_asset

    with pytest.raises(ValueError, match="outlets must be AssetAlias objects"):
        ReviewOperator(task_id="decide", action="release", why="x", outlets=[released_batch_asset()])


def test_retry_policy_retries_transient_faults_only(dagbag: Any) -> None:
    import httpx
    from airflow.sdk import RetryAction

    from tunegate.exceptions import ConfigError, InputError

    task = dagbag.get_dag(NIGHTLY).get_task("ingest")
    policy = task.retry_policy
    assert policy is not None
    decide = lambda exc: policy.evaluate(exc, try_number=1, max_tries=4).action  # noqa: E731
    assert decide(OSError("connection reset by peer")) is RetryAction.RETRY
    assert decide(TimeoutError()) is RetryAction.RETRY
    assert decide(httpx.ConnectError("api-server restarting")) is RetryAction.RETRY
    assert decide(ConfigError("unknown check 'x'")) is RetryAction.FAIL
    assert decide(InputError("no such file")) is RetryAction.FAIL
    assert decide(KeyError("bug")) is RetryAction.FAIL
