"""
### tunegate_posttune_audit: vet each candidate model the fine-tuning DAG trains, before anyone deploys it

Scheduled on `tunegate_nightly_candidate_model` (emitted by `tunegate_finetune`'s `train`). One task, `audit`
(`PostTuneAuditOperator`), probes the model served at the endpoint of an Airflow `http` connection (an
OpenAI-compatible `POST {base}/v1/chat/completions`: vLLM, TGI, llama.cpp, a hosted API, or
`tunegate serve-model DIR`) with the candidate's held-out prompts, as they are and with each suspicious phrase
the nights' poison scans reported inserted, and measures label flips, degenerate responses, brand mentions and
refusals (thresholds: docs/audit.md). It writes `audit.json` and `audit.html` into the candidate directory.

* **pass**: the task succeeds and emits `tunegate_nightly_model_vetted` (model, audit, night in the extra);
* **fail**: the task fails without retry, its message naming the failures; nothing is emitted, and the
  channels of `TUNEGATE_ALERT_WEBHOOK_CONN_ID`, `TUNEGATE_ALERT_SLACK_CONN_ID`, `TUNEGATE_ALERT_EMAIL_TO` get an
  alert. An endpoint that is down is retried (3 times, backing off).

Params:
* `model_conn_id`: the endpoint's connection (null: the one the candidate names, `$TUNEGATE_MODEL_CONN_ID` when
  it was trained, else `tunegate_model_default`; that one undefined, the task serves the saved canary itself);
* `candidate_dir`: audit this candidate directory by hand instead of the triggering event's;
* `heldout_uri`: probe with these held-out records (canonical-schema Parquet) instead of the candidate's;
* `probe_options`: thresholds and sizes to change (`ProbeConfig` fields, e.g. `{"max_flip_rate": 0.2}`).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import DAG, Param

from tunegate._airflow import retry_default_args
from tunegate.exceptions import TunegateError
from tunegate.notifications import notifiers_from_env
from tunegate.operators import PostTuneAuditOperator, candidate_model_asset, vetted_model_asset

DAG_ID = "tunegate_posttune_audit"
PIPELINE = "tunegate_nightly"
ALERTS = notifiers_from_env()

default_args = {
    "owner": "data-platform",
    # An endpoint still starting or briefly overloaded heals; a failed audit or a misconfiguration does not.
    **retry_default_args(retries=3, retry_delay=timedelta(minutes=2), max_retry_delay=timedelta(minutes=15),
                         transient=(OSError, TimeoutError, "httpx.TransportError"), permanent=(TunegateError,)),
    "execution_timeout": timedelta(hours=1),
    **({"on_failure_callback": ALERTS} if ALERTS else {}),
}

with DAG(
    dag_id=DAG_ID,
    description="Probe each fine-tuned candidate with and without the nights' suspicious phrases; vet or alert",
    doc_md=__doc__,
    schedule=[candidate_model_asset(PIPELINE)],
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    default_args=default_args,
    render_template_as_native_obj=True,
    params={
        "model_conn_id": Param(None, type=["null", "string"],
                               description="Airflow http connection of the model endpoint; null: the candidate's"),
        "candidate_dir": Param(None, type=["null", "string"],
                               description="Audit this candidate directory instead of the triggering event's"),
        "heldout_uri": Param(None, type=["null", "string"],
                             description="Held-out records (canonical Parquet) to probe with; null: the candidate's"),
        "probe_options": Param(None, type=["null", "object"],
                               description="ProbeConfig fields to change, e.g. {\"max_flip_rate\": 0.2}"),
    },
    tags=["tunegate", "training", "audit"],
) as dag:
    PostTuneAuditOperator(task_id="audit", pipeline=PIPELINE, model_conn_id="{{ params.model_conn_id }}",
                          candidate_dir="{{ params.candidate_dir }}", heldout_uri="{{ params.heldout_uri }}",
                          probe_options="{{ params.probe_options }}", outlets=[vetted_model_asset(PIPELINE)])
