"""The Asset a curation DAG publishes, and how a consumer reads the batch from its event.

The Asset identifies the *stream* of accepted batches of one curation DAG; it never changes from night
to night. Where a given night's batch lies travels in the event's ``extra`` (see :func:`batch_extra`):

    verdict        "pass" or "quarantine" (a halted batch publishes no event)
    counts         {"total", "accepted", "quarantined", "rejected"}
    accepted_uri   file URI of accepted.parquet, the data to fine-tune on
    accepted_sha256, accepted_bytes
                   the committed file's sha256 and size (:func:`latest_batch` checks them: a consumer never
                   trains on a file that a later, unfinished run of the night replaced or removed)
    report_uri     file URI of report.html
    summary_uri    file URI of summary.json
    run_dir        the run directory (all outputs of that night)
    run_date       YYYY-MM-DD of the run
    top_reasons    at most five {reason: quarantined records}
    alerts         number of batch-level warnings (their text is in summary.json)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from airflow.sdk import Asset
from airflow.sdk.exceptions import AirflowFailException

DEFAULT_PIPELINE = "tunegate_nightly"
ASSET_GROUP = "tunegate"
_TOP_REASONS = 5
REQUIRED_EXTRA = ("verdict", "counts", "accepted_uri", "report_uri", "run_dir")


def accepted_batch_asset(pipeline: str = DEFAULT_PIPELINE) -> Asset:
    """The Asset of the accepted batches of ``pipeline`` (the curation DAG id)."""
    return Asset(name=f"{pipeline}_accepted", uri=f"tunegate://{pipeline}/accepted", group=ASSET_GROUP)


def batch_extra(summary: dict[str, Any], run_dir: Path, run_date: str) -> dict[str, Any]:
    """The event extra for a gated batch: URIs and counts only, a few hundred bytes whatever the batch size."""
    out = Path(summary["out_dir"])
    outputs: dict[str, str] = summary["outputs"]
    top = sorted(summary.get("reasons", {}).items(), key=lambda kv: (-kv[1], kv[0]))[:_TOP_REASONS]
    committed = (summary.get("commit") or {}).get("files", {}).get(outputs["accepted"], {})
    return {
        "verdict": summary["verdict"],
        "counts": {k: summary[k] for k in ("total", "accepted", "quarantined", "rejected")},
        "accepted_uri": (out / outputs["accepted"]).resolve().as_uri(),
        "report_uri": (out / outputs["report"]).resolve().as_uri(),
        "summary_uri": (out / outputs["summary"]).resolve().as_uri(),
        "run_dir": str(run_dir.resolve()),
        "run_date": run_date,
        "top_reasons": dict(top),
        "alerts": len(summary.get("alerts", [])),
        "accepted_sha256": committed.get("sha256"),
        "accepted_bytes": committed.get("bytes"),
    }


def latest_batch(events: Sequence[Any]) -> dict[str, Any]:
    """The extra of the newest triggering event, checked to hold what a consumer needs.

    Several events can be folded into one consumer run (two nights published before it started): the
    newest batch wins, and the older ones are named in the log by the caller if it cares.
    """
    if not events:
        raise AirflowFailException("no triggering asset event: this DAG runs when the curation DAG publishes a batch")
    extra = dict(getattr(events[-1], "extra", None) or {})
    missing = [k for k in REQUIRED_EXTRA if k not in extra]
    if missing:
        raise AirflowFailException(f"the triggering asset event lacks {missing}; was it published by tunegate?")
    if extra.get("accepted_sha256"):
        _check_committed(extra)
    return extra


def _check_committed(extra: dict[str, Any]) -> None:
    """The accepted file is still the one the event announced (size, then sha256); a rerun of that night
    that is under way or was interrupted has removed or replaced it, and its own event will follow."""
    import hashlib

    import fsspec

    uri = extra["accepted_uri"]
    try:
        with fsspec.open(uri, "rb") as f:
            digest = hashlib.file_digest(f, "sha256")
            size = f.tell()
    except FileNotFoundError:
        raise AirflowFailException(f"{uri} is gone: a rerun of that night removed it; wait for its event") from None
    if size != extra.get("accepted_bytes") or digest.hexdigest() != extra["accepted_sha256"]:
        raise AirflowFailException(f"{uri} is not the batch the event announced (sha256 differs): a rerun of that "
                                   "night replaced it; train on the batch of the newest event")


def parquet_row_count(uri: str) -> int:
    """Rows of a Parquet file, from its footer only (no data is read)."""
    import fsspec
    import pyarrow.parquet as pq

    with fsspec.open(uri, "rb") as f:
        return int(pq.read_metadata(f).num_rows)
