"""
### tunegate_finetune: fine-tune on each batch tunegate_nightly accepts

Scheduled on the Asset `tunegate_nightly_accepted`. The triggering event's extra names the accepted
Parquet file, the report and the counts; this DAG reads the path from there, never from a fixed
location. Training itself is a placeholder (`train_placeholder`) that logs what it would train on.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from airflow.sdk import DAG, task

from tunegate.operators import accepted_batch_asset, latest_batch, parquet_row_count

log = logging.getLogger(__name__)

ACCEPTED_BATCH = accepted_batch_asset("tunegate_nightly")


def describe_training_batch(triggering_asset_events: Any) -> dict[str, Any]:
    """Resolve the accepted batch from the triggering events and count its rows (Parquet footer only)."""
    events = list(triggering_asset_events[ACCEPTED_BATCH]) if triggering_asset_events else []
    extra = latest_batch(events)
    rows = parquet_row_count(extra["accepted_uri"])
    return {"accepted_uri": extra["accepted_uri"], "rows": rows, "verdict": extra["verdict"],
            "run_date": extra.get("run_date"), "report_uri": extra["report_uri"], "events": len(events)}


with DAG(
    dag_id="tunegate_finetune",
    description="Placeholder fine-tuning job fed by tunegate's accepted batches",
    doc_md=__doc__,
    schedule=[ACCEPTED_BATCH],
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
                 "report %s)", batch["rows"], batch["accepted_uri"], batch["verdict"], batch["run_date"],
                 batch["report_uri"])
        return batch

    train_placeholder()
