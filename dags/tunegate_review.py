"""
### tunegate_review: release or confirm the quarantined records of a night, from Airflow

Triggered by hand (no schedule), once per decision, by the on-call engineer after reading the night's report
(`{TUNEGATE_DATA_ROOT}/{pipeline}/{night}/report.html`). One task, `decide` (`ReviewOperator`), applies the
decision to that night's run directory with the same code as `tunegate review release|confirm`
(docs/review.md):

* **release**: the selected records are written to a follow-up file `released/<seq>-<time>.parquet` (the night's
  `accepted.parquet` is never edited) and announced as an event of the Asset `{pipeline}_released`
  (`tunegate://{pipeline}/released`), whose extra names the file, its sha256, size and record count, the night,
  the release's number, who and why. `tunegate_finetune` is scheduled on it: it trains on the released file.
* **confirm**: the records are confirmed as poison; later nights quarantine their copies (`known_poison`).
  No event.

Every decision is a line of the night's `audit.jsonl` (who, when, why, the records' ids and content hashes,
tunegate's version, this task instance). A retry of the task never releases twice: if an earlier try released
and then failed, the retry emits that release's event again (same extra). A new run with the same decision
releases nothing, writes no audit line and emits no event.

Params:
* `night`: the night to review, `YYYY-MM-DD` (required);
* `action`: `release` or `confirm`;
* `ids`: record ids; `reason`: a reason code (e.g. `trigger_phrase`); `phrase`: a poison phrase the report
  names (all given ones must hold; at least one is needed);
* `by`: who decides (empty: the user who triggered this run); `why`: why (required, kept in the audit log);
* `override`: decide against an earlier decision (release a confirmed record, confirm a released one);
* `pipeline`: the curation DAG whose night it is (default `tunegate_nightly`).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import DAG, Param

from tunegate._airflow import retry_default_args
from tunegate.exceptions import TunegateError
from tunegate.operators import ReviewOperator, released_batch_alias

DAG_ID = "tunegate_review"

with DAG(
    dag_id=DAG_ID,
    description="Release or confirm the quarantined records of a tunegate night; a release is an Asset event",
    doc_md=__doc__,
    schedule=None,
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,  # decisions one after another (the core also locks the night)
    default_args={
        "owner": "data-platform",
        # a file system hiccup is retried; a refused decision (unknown id, halted night, conflict) is not
        **retry_default_args(retries=2, retry_delay=timedelta(minutes=1), max_retry_delay=timedelta(minutes=10),
                             transient=(OSError, TimeoutError, "httpx.TransportError"), permanent=(TunegateError,)),
        "execution_timeout": timedelta(minutes=30),
    },
    render_template_as_native_obj=True,
    params={
        "night": Param(type="string", format="date", description="The night to review (YYYY-MM-DD)"),
        "action": Param("release", type="string", enum=["release", "confirm"],
                        description="release: publish to the fine-tuning side; confirm: confirm as poison"),
        "ids": Param([], type="array", items={"type": "string"}, description="Record ids"),
        "reason": Param(None, type=["null", "string"], description="Every quarantined record with this reason"),
        "phrase": Param(None, type=["null", "string"],
                        description="Every quarantined record whose evidence names this poison phrase"),
        "by": Param(None, type=["null", "string"], description="Who decides; empty: the user who triggered the run"),
        "why": Param(type="string", minLength=1, description="Why (kept in the audit log)"),
        "override": Param(False, type="boolean", description="Decide against an earlier decision"),
        "pipeline": Param("tunegate_nightly", type="string", pattern="^[A-Za-z0-9_.-]+$",
                          description="The curation DAG whose night it is"),
    },
    tags=["tunegate", "curation", "review"],
) as dag:
    ReviewOperator(task_id="decide", action="{{ params.action }}", night="{{ params.night }}",
                   pipeline="{{ params.pipeline }}", ids="{{ params.ids }}", reason="{{ params.reason }}",
                   phrase="{{ params.phrase }}", by="{{ params.by }}", why="{{ params.why }}",
                   override="{{ params.override }}", outlets=[released_batch_alias()])
