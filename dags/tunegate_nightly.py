"""
### tunegate_nightly: gate tonight's instruction-tuning batch before anything trains on it

`ingest -> validate -> scan -> gate -> publish`, once a day. Every task works in the run directory
`{TUNEGATE_DATA_ROOT}/tunegate_nightly/{logical date}/` (a rerun overwrites that night only):

* **ingest** reads the input (`input_uri`, templated per night, e.g. `s3://bucket/batches/{{ ds }}/`, through
  the Airflow connection `storage_conn_id`) into `work/canonical.parquet`; unparseable records go to
  `rejected.jsonl`;
* **validate** runs the Great Expectations suites; **scan** runs every check of the policy: by default exact
  and near duplicates (within the night and against the history of accepted nights), embedding outliers,
  and both poison scans (trigger phrases, injected content);
* **gate** applies the policy: *halt* fails the run (never retried) and publishes nothing; *pass* and
  *quarantine* write `accepted.parquet`;
* **publish** adds the accepted records to the history (`history_dir`; a rerun of a night replaces that
  night's contribution) and emits the Asset `tunegate_nightly_accepted`, which schedules `tunegate_finetune`.

Alerts: the channels named by `TUNEGATE_ALERT_WEBHOOK_CONN_ID`, `TUNEGATE_ALERT_SLACK_CONN_ID` and
`TUNEGATE_ALERT_EMAIL_TO` get a message on *quarantine* and when a task fails for good (a *halt* included).

Params (all render to real types):
* `input_uri`: file, directory, glob or fsspec URL (default `$TUNEGATE_INPUT_URI`, else the bundled `samples/nightly`);
* `policy_file`: YAML/JSON policy: gate settings, `checks:` (which checks run, their options) and `suites:`
  (default `$TUNEGATE_POLICY_FILE`, else the built-in defaults: every check on);
* `checks`: a list of check names to run instead of the policy's (null: the policy's);
* `history_dir`: where the history lives (null: `$TUNEGATE_HISTORY_DIR`, else
  `{TUNEGATE_DATA_ROOT}/tunegate_nightly/history`; empty string: no history);
* `storage_conn_id`: Airflow connection for object storage inputs (null: `$TUNEGATE_STORAGE_CONN_ID`, else none).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from airflow.sdk import DAG

from tunegate.notifications import notifiers_from_env
from tunegate.operators import (
    GateOperator,
    IngestOperator,
    PublishOperator,
    ScanOperator,
    ValidateOperator,
    accepted_batch_asset,
)
from tunegate.operators.nightly import nightly_default_args, nightly_params

DAG_ID = "tunegate_nightly"
# The bundled sample batch, when the DAG runs from a checkout (the demo); deployments set TUNEGATE_INPUT_URI.
_SAMPLE_INPUT = Path(__file__).resolve().parents[1] / "samples" / "nightly"
# Alert channels named by TUNEGATE_ALERT_* variables (connection ids only; secrets stay in connections).
ALERTS = notifiers_from_env()

with DAG(
    dag_id=DAG_ID,
    description="Gate the nightly instruction-tuning batch: ingest, validate, scan, gate, publish",
    doc_md=__doc__,
    schedule="@daily",
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(hours=6),
    default_args=nightly_default_args(ALERTS),
    # Params reach the operators as real lists and nulls, not their string renderings.
    render_template_as_native_obj=True,
    params=nightly_params(_SAMPLE_INPUT),
    tags=["tunegate", "curation"],
) as dag:
    ingest = IngestOperator(task_id="ingest", inputs="{{ params.input_uri }}", policy_file="{{ params.policy_file }}",
                            storage_conn_id="{{ params.storage_conn_id }}")
    validate = ValidateOperator(task_id="validate", policy_file="{{ params.policy_file }}")
    scan = ScanOperator(task_id="scan", policy_file="{{ params.policy_file }}", checks="{{ params.checks }}",
                        history_dir="{{ params.history_dir }}")
    gate = GateOperator(task_id="gate", policy_file="{{ params.policy_file }}", on_quarantine=ALERTS or None)
    publish = PublishOperator(task_id="publish", history_dir="{{ params.history_dir }}",
                              policy_file="{{ params.policy_file }}", outlets=[accepted_batch_asset(DAG_ID)])

    ingest >> validate >> scan >> gate >> publish
