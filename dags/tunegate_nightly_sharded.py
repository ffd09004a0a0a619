"""
### tunegate_nightly_sharded: tonight's batch in shards, on as many workers as there are

The same gate as `tunegate_nightly`, scaled out with Airflow's dynamic task mapping:

`plan -> shard (one mapped task per shard) -> merge -> validate -> scan -> gate -> publish`

* **plan** cuts the input into shards of about equal bytes: whole files, and large JSON Lines files cut at line
  boundaries (`shards` param, or one shard per 32 MiB of input);
* **shard** (mapped: one task instance per shard, spread over the Celery or Kubernetes workers) reads its share,
  runs the per-record checks (record size, the GX suites' per-record expectations) and embeds its records,
  writing only under `work/shards/<n>/`; a failed shard retries alone;
* **merge** joins the shards in input order into the night's work directory, exactly as one ingest of every file
  would have written it, and gathers every shard's vectors;
* **validate** adds up the shards' GX results and runs the expectations that need the whole night (id uniqueness,
  label sets derived from the night); **scan** runs the checks that need the whole batch (exact duplicates across
  shards, near duplicates and outliers through one FAISS index of all shards' vectors plus the history, both
  poison scans); **gate** and **publish** are the unsharded DAG's: the verdict and the history.

The verdict and every output equal `tunegate_nightly`'s on the same input (docs/scale.md says what runs where,
measured costs and how far it scales). Outputs live under `{TUNEGATE_DATA_ROOT}/tunegate_nightly_sharded/{date}/`
and the accepted batch is the Asset `tunegate_nightly_sharded_accepted`.

Params: those of `tunegate_nightly`, plus `shards` (an integer, or null for one shard per 32 MiB of input).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, Param

from tunegate.notifications import notifiers_from_env
from tunegate.operators import GateOperator, PublishOperator, accepted_batch_asset
from tunegate.operators.nightly import nightly_default_args, nightly_params
from tunegate.operators.shard import (
    MergeScanOperator,
    MergeValidateOperator,
    ShardMergeOperator,
    ShardOperator,
    ShardPlanOperator,
)

DAG_ID = "tunegate_nightly_sharded"
_SAMPLE_INPUT = Path(__file__).resolve().parents[1] / "samples" / "nightly"
ALERTS = notifiers_from_env()

with DAG(
    dag_id=DAG_ID,
    description="Gate the nightly instruction-tuning batch in shards: plan, shard (mapped), merge, validate, scan, "
                "gate, publish",
    doc_md=__doc__,
    schedule="@daily",
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(hours=6),
    default_args=nightly_default_args(ALERTS),  # as tunegate_nightly: a mapped shard retries alone
    render_template_as_native_obj=True,
    params=nightly_params(_SAMPLE_INPUT, shards=Param(None, type=["null", "integer"], minimum=1,
                                                      description="How many shards; null for one per 32 MiB of input")),
    tags=["tunegate", "curation", "sharded"],
) as dag:
    reading: dict[str, Any] = {"inputs": "{{ params.input_uri }}", "policy_file": "{{ params.policy_file }}",
                               "storage_conn_id": "{{ params.storage_conn_id }}"}
    plan = ShardPlanOperator(task_id="plan", shards="{{ params.shards }}", **reading)
    shard = ShardOperator.partial(task_id="shard", checks="{{ params.checks }}",
                                  map_index_template="shard {{ task.shard }}", **reading).expand(shard=plan.output)
    merge = ShardMergeOperator(task_id="merge", policy_file="{{ params.policy_file }}", checks="{{ params.checks }}")
    validate = MergeValidateOperator(task_id="validate", policy_file="{{ params.policy_file }}")
    scan = MergeScanOperator(task_id="scan", policy_file="{{ params.policy_file }}", checks="{{ params.checks }}",
                             history_dir="{{ params.history_dir }}")
    gate = GateOperator(task_id="gate", policy_file="{{ params.policy_file }}", on_quarantine=ALERTS or None)
    publish = PublishOperator(task_id="publish", history_dir="{{ params.history_dir }}",
                              policy_file="{{ params.policy_file }}", outlets=[accepted_batch_asset(DAG_ID)])

    plan >> shard >> merge >> validate >> scan >> gate >> publish
