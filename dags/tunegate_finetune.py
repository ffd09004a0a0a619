"""
### tunegate_finetune: fine-tune on each batch tunegate_nightly accepts, and on each release from review

Scheduled on `tunegate_nightly_accepted | tunegate_nightly_released`: a night the gate let through
(`publish`), or records a reviewer released from a night's quarantine (`tunegate_review`; a follow-up file,
the night itself is never edited). The triggering events' extras name the Parquet files, their sha256 and
sizes; this DAG reads the paths from there, never from a fixed location, and refuses a file that is not the
one announced. Of accepted nights it takes the newest event; of releases, every one (each is its own file),
once per file.

`batch` resolves what to train on; `train` trains the candidate model on it and emits the Asset
`tunegate_nightly_candidate_model`, which schedules the post-tune audit (`tunegate_posttune_audit`, docs/audit.md).
The candidate is the canary classifier (`tunegate.core.audit.canary`), a stand-in for a real fine-tuning job:
one tenth of the batch (by content hash) is held out for the audit's prompts; the model, the held-out records
and `candidate.json` go to `{TUNEGATE_DATA_ROOT}/tunegate_finetune/candidates/{run id}/` (a rerun of the run
replaces them). The event names that directory, the nights' `summary.json` (their suspicious phrases) and the
connection of the endpoint serving candidates (`$TUNEGATE_MODEL_CONN_ID`, else `tunegate_model_default`).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, task

from tunegate.operators import (
    accepted_batch_asset,
    candidate_model_asset,
    latest_batch,
    parquet_row_count,
    released_batch_asset,
    released_batches,
)

log = logging.getLogger(__name__)

ACCEPTED_BATCH = accepted_batch_asset("tunegate_nightly")
RELEASED_BATCH = released_batch_asset("tunegate_nightly")
CANDIDATE_MODEL = candidate_model_asset("tunegate_nightly")
SUMMARY_FILE = "summary.json"


def _events_of(triggering_asset_events: Any, asset: Any) -> list[Any]:
    if not triggering_asset_events:
        return []
    try:
        return list(triggering_asset_events[asset])
    except KeyError:
        return []


def describe_training_batch(triggering_asset_events: Any) -> dict[str, Any]:
    """Resolve what to train on from the triggering events (the newest accepted night, every released file),
    each checked against its announced sha256, and count the rows (Parquet footers only)."""
    accepted_events = _events_of(triggering_asset_events, ACCEPTED_BATCH)
    released_events = _events_of(triggering_asset_events, RELEASED_BATCH)
    files: list[dict[str, Any]] = []
    accepted: dict[str, Any] = {}
    if accepted_events or not released_events:  # neither: latest_batch says there is no event
        accepted = latest_batch(accepted_events)
        files.append({"kind": "accepted", "uri": accepted["accepted_uri"], "night": accepted.get("run_date"),
                      "rows": parquet_row_count(accepted["accepted_uri"]), "summary_uri": accepted.get("summary_uri")})
    released = released_batches(released_events)
    for extra in released:
        files.append({"kind": "released", "uri": extra["released_uri"], "night": extra["night"],
                      "rows": parquet_row_count(extra["released_uri"]), "sha256": extra["released_sha256"],
                      "seq": extra.get("seq"), "by": extra.get("by"),
                      "summary_uri": (Path(extra["run_dir"]) / SUMMARY_FILE).resolve().as_uri()})
    newest = accepted or released[-1]
    return {"accepted_uri": accepted.get("accepted_uri"), "files": files, "rows": sum(f["rows"] for f in files),
            "verdict": newest.get("verdict"), "run_date": newest.get("run_date") or newest.get("night"),
            "report_uri": newest.get("report_uri"), "events": len(accepted_events) + len(released_events)}


with DAG(
    dag_id="tunegate_finetune",
    description="Fine-tune a candidate model on tunegate's accepted batches and reviewed releases",
    doc_md=__doc__,
    schedule=ACCEPTED_BATCH | RELEASED_BATCH,
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    tags=["tunegate", "training"],
) as dag:

    @task(task_id="batch")
    def batch(triggering_asset_events: Any = None) -> dict[str, Any]:
        """What to train on: the triggering events' files, each checked against its announced sha256."""
        found = describe_training_batch(triggering_asset_events)
        log.info("training batch: %d records from %s (verdict %s, night %s, report %s)", found["rows"],
                 ", ".join(f["uri"] for f in found["files"]), found["verdict"], found["run_date"], found["report_uri"])
        return found

    @task(task_id="train", outlets=[CANDIDATE_MODEL])
    def train(found: dict[str, Any], dag_run: Any = None, outlet_events: Any = None) -> dict[str, Any]:
        """Train the candidate (the canary classifier, a stand-in for a fine-tuning job) and announce it."""
        from tunegate.operators.audit import train_candidate_for_run

        extra = train_candidate_for_run(found, dag_id=dag_run.dag_id, run_id=dag_run.run_id)
        outlet_events[CANDIDATE_MODEL].extra = extra
        log.info("candidate trained on %s records (%s held out for the audit): %s", extra["trained_on"],
                 extra["heldout"], extra["candidate_dir"])
        return extra

    train(batch())
