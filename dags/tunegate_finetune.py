"""
### tunegate_finetune: fine-tune on each batch tunegate_nightly accepts, and on each release from review

Scheduled on `tunegate_nightly_accepted | tunegate_nightly_released`: a night the gate let through
(`publish`), or records a reviewer released from a night's quarantine (`tunegate_review`; a follow-up file,
the night itself is never edited). The triggering events' extras name the Parquet files, their sha256 and
sizes; this DAG reads the paths from there, never from a fixed location, and refuses a file that is not the
one announced. Of accepted nights it takes the newest event; of releases, every one (each is its own file),
once per file. Training itself is a placeholder (`train_placeholder`) that logs what it would train on.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from airflow.sdk import DAG, task

from tunegate.operators import (
    accepted_batch_asset,
    latest_batch,
    parquet_row_count,
    released_batch_asset,
    released_batches,
)

log = logging.getLogger(__name__)

ACCEPTED_BATCH = accepted_batch_asset("tunegate_nightly")
RELEASED_BATCH = released_batch_asset("tunegate_nightly")


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
                      "rows": parquet_row_count(accepted["accepted_uri"])})
    released = released_batches(released_events)
    for extra in released:
        files.append({"kind": "released", "uri": extra["released_uri"], "night": extra["night"],
                      "rows": parquet_row_count(extra["released_uri"]), "sha256": extra["released_sha256"],
                      "seq": extra.get("seq"), "by": extra.get("by")})
    newest = accepted or released[-1]
    return {"accepted_uri": accepted.get("accepted_uri"), "files": files, "rows": sum(f["rows"] for f in files),
            "verdict": newest.get("verdict"), "run_date": newest.get("run_date") or newest.get("night"),
            "report_uri": newest.get("report_uri"), "events": len(accepted_events) + len(released_events)}


with DAG(
    dag_id="tunegate_finetune",
    description="Placeholder fine-tuning job fed by tunegate's accepted batches and reviewed releases",
    doc_md=__doc__,
    schedule=ACCEPTED_BATCH | RELEASED_BATCH,
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    tags=["tunegate", "training"],
) as dag:

    @task(task_id="train_placeholder")
    def train_placeholder(triggering_asset_events: Any = None) -> dict[str, Any]:
        """PLACEHOLDER: a real job would launch fine-tuning here. It only logs what it would train on."""
        batch = describe_training_batch(triggering_asset_events)
        log.info("PLACEHOLDER training step: would fine-tune on %d records from %s (verdict %s, night %s, "
                 "report %s)", batch["rows"], ", ".join(f["uri"] for f in batch["files"]), batch["verdict"],
                 batch["run_date"], batch["report_uri"])
        return batch

    train_placeholder()
