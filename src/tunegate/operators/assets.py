"""The Assets a curation DAG publishes, and how a consumer reads the batch from their events.

Two streams per curation DAG (``pipeline``): its accepted nights (:func:`accepted_batch_asset`, emitted by
``publish``) and the follow-up files of records a reviewer released from a night's quarantine
(:func:`released_batch_asset`, emitted by the review DAG's ``ReviewOperator`` through
:func:`released_batch_alias`; see :func:`released_extra`). A published night is never edited in place: a
release is a new file and a new event.

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

Downstream of the fine-tuning DAG, two more (the post-tune audit, docs/audit.md): the candidate model a
fine-tuning run trained (:func:`candidate_model_asset`, :func:`candidate_extra`) and the model the post-tune
audit vetted (:func:`vetted_model_asset`, :func:`vetted_extra`), emitted only when its probes pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from airflow.sdk import Asset, AssetAlias
from airflow.sdk.exceptions import AirflowFailException

from tunegate.core.outputs import REPORT_FILE
from tunegate.core.review.audit import AUDIT_FILE

DEFAULT_PIPELINE = "tunegate_nightly"
ASSET_GROUP = "tunegate"
_TOP_REASONS = 5
REQUIRED_EXTRA = ("verdict", "counts", "accepted_uri", "report_uri", "run_dir")
#: What a consumer needs of a release event (:func:`released_extra` writes more).
REQUIRED_RELEASED_EXTRA = ("released_uri", "released_sha256", "released_bytes", "count", "run_dir", "night")
#: The alias the review DAG emits release events through: the released Asset of the pipeline a decision was
#: about is known only when the task runs (a param), and a confirmation must emit nothing.
RELEASED_ALIAS = "tunegate_released"
#: What the post-tune audit needs of a candidate-model event (:func:`candidate_extra` writes more).
REQUIRED_CANDIDATE_EXTRA = ("candidate_dir", "manifest_uri", "manifest_sha256", "manifest_bytes")
CANDIDATE_MANIFEST = "candidate.json"  # tunegate.core.audit.candidate.MANIFEST_FILE (that module loads fsspec)


def accepted_batch_asset(pipeline: str = DEFAULT_PIPELINE) -> Asset:
    """The Asset of the accepted batches of ``pipeline`` (the curation DAG id)."""
    return Asset(name=f"{pipeline}_accepted", uri=f"tunegate://{pipeline}/accepted", group=ASSET_GROUP)


def released_batch_asset(pipeline: str = DEFAULT_PIPELINE) -> Asset:
    """The Asset of the records released from the quarantine of ``pipeline``'s nights, one event per release."""
    return Asset(name=f"{pipeline}_released", uri=f"tunegate://{pipeline}/released", group=ASSET_GROUP)


def candidate_model_asset(pipeline: str = DEFAULT_PIPELINE) -> Asset:
    """The Asset of the candidate models the fine-tuning DAG trains on ``pipeline``'s batches (one event per
    training run; :func:`candidate_extra`). The post-tune audit DAG is scheduled on it."""
    return Asset(name=f"{pipeline}_candidate_model", uri=f"tunegate://{pipeline}/candidate_model", group=ASSET_GROUP)


def vetted_model_asset(pipeline: str = DEFAULT_PIPELINE) -> Asset:
    """The Asset of the candidate models that passed the post-tune audit (:func:`vetted_extra`): what a
    deployment DAG may schedule on. A failed audit emits nothing."""
    return Asset(name=f"{pipeline}_model_vetted", uri=f"tunegate://{pipeline}/model_vetted", group=ASSET_GROUP)


def released_batch_alias() -> AssetAlias:
    """The outlet of a ``ReviewOperator``: a release adds an event for :func:`released_batch_asset` of its
    pipeline; a confirmation (or a decision with nothing to release) adds none."""
    return AssetAlias(name=RELEASED_ALIAS, group=ASSET_GROUP)


def released_extra(entry: dict[str, Any], run_dir: Path, *, night: str, pipeline: str) -> dict[str, Any]:
    """The event extra of one release, built from its audit line only (so the retry of a task that released
    and then failed re-emits exactly the same extra):

        released_uri     file URI of released/<seq>-<time>.parquet (canonical schema, like accepted.parquet)
        released_sha256, released_bytes
                         as the audit line recorded them; :func:`released_batches` checks them
        count            records in the file
        seq              the release's number in the night (released/<seq>-...)
        night, run_dir, pipeline, batch_id, verdict
                         which night (YYYY-MM-DD), where its outputs are, its batch id and verdict
        by, why, at      who decided, why, when (UTC), as the audit line says
        audit_uri        file URI of the night's audit.jsonl; ``request`` the Airflow task that decided
        report_uri       file URI of the night's report.html
    """
    info = entry["released_file"]
    path = run_dir / str(info["path"])
    return {
        "kind": "released",
        "released_uri": path.resolve().as_uri(),
        "released_sha256": info["sha256"],
        "released_bytes": info["bytes"],
        "count": info["records"],
        "seq": int(path.name.split("-")[0]),
        "night": night,
        "run_dir": str(run_dir.resolve()),
        "pipeline": pipeline,
        "batch_id": entry.get("batch_id"),
        "verdict": entry.get("verdict"),
        "by": entry.get("by"),
        "why": entry.get("why"),
        "at": entry.get("at"),
        "request": entry.get("request"),
        "audit_uri": (run_dir / AUDIT_FILE).resolve().as_uri(),
        "report_uri": (run_dir / REPORT_FILE).resolve().as_uri(),
    }


def candidate_extra(manifest: dict[str, Any], candidate_dir: Path) -> dict[str, Any]:
    """The event extra of a trained candidate (``manifest``: its ``candidate.json``):

        candidate_dir    the directory of the run's candidate (model/, heldout.parquet, candidate.json, audit.*)
        manifest_uri, manifest_sha256, manifest_bytes
                         candidate.json and its hash: :func:`latest_candidate` refuses a candidate a later rerun
                         of the training run replaced
        model_dir, model_uri, model_name
                         the saved model, and the name an endpoint serves it under
        heldout_uri      the held-out records the audit probes with
        night, verdict, report_uri, summary_uris
                         the newest night trained on and the summaries of every night (their suspicious phrases)
        endpoint_conn_id the Airflow connection of the endpoint serving candidates
        records, trained_on, heldout, tasks
                         counts, and the number of classification tasks of the model
    """
    import hashlib

    manifest_path = candidate_dir / CANDIDATE_MANIFEST
    data = manifest_path.read_bytes()
    model_dir = Path(manifest["model_dir"])
    return {
        "kind": "candidate_model",
        "candidate_dir": str(candidate_dir.resolve()),
        "manifest_uri": manifest_path.resolve().as_uri(),
        "manifest_sha256": hashlib.sha256(data).hexdigest(),
        "manifest_bytes": len(data),
        "model_dir": str(model_dir),
        "model_uri": model_dir.resolve().as_uri(),
        "model_name": manifest.get("model_name", "canary"),
        "heldout_uri": manifest["heldout_uri"],
        **{k: manifest.get(k) for k in ("night", "verdict", "report_uri", "summary_uris", "endpoint_conn_id",
                                        "records", "trained_on", "heldout", "run_id")},
        "tasks": len(manifest.get("tasks") or []),
    }


def latest_candidate(events: Sequence[Any]) -> dict[str, Any]:
    """The extra of the newest candidate-model event, its ``candidate.json`` checked to be the one announced."""
    if not events:
        raise AirflowFailException("no triggering candidate-model event: this DAG runs when the fine-tuning DAG "
                                   "trains a candidate; to audit one by hand, pass candidate_dir")
    extra = dict(getattr(events[-1], "extra", None) or {})
    missing = [k for k in REQUIRED_CANDIDATE_EXTRA if k not in extra]
    if missing:
        raise AirflowFailException(f"the triggering candidate event lacks {missing}; was it emitted by tunegate's "
                                   "fine-tuning DAG?")
    _check_file(extra["manifest_uri"], extra["manifest_sha256"], extra["manifest_bytes"], what="candidate",
                gone="the candidate directory was removed", changed="a rerun of that training run replaced the "
                "candidate; its own event follows")
    return extra


def load_candidate(candidate_dir: str) -> dict[str, Any]:
    """A candidate's ``candidate.json`` with ``candidate_dir`` added (what the post-tune audit reads)."""
    import json

    path = Path(candidate_dir) / CANDIDATE_MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AirflowFailException(f"{path} is missing: not a trained candidate (or its training did not "
                                   "finish)") from None
    return {**manifest, "candidate_dir": str(Path(candidate_dir).resolve())}


def vetted_extra(candidate: dict[str, Any], audit: dict[str, Any], *, audit_uri: str, endpoint: str) -> dict[str, Any]:
    """The event extra of a model that passed the post-tune audit: where the model and its audit are."""
    return {
        "kind": "model_vetted",
        "model_dir": candidate["model_dir"],
        "model_uri": Path(candidate["model_dir"]).resolve().as_uri(),
        "candidate_dir": candidate["candidate_dir"],
        "night": candidate.get("night"),
        "run_id": candidate.get("run_id"),
        "audit_uri": audit_uri,
        "verdict": audit["verdict"],
        "endpoint": endpoint,
        "prompts": audit.get("prompts"),
        "requests": audit.get("requests"),
        "phrases": list(audit.get("triggers") or []) + list(audit.get("brands") or []),
    }


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
        # a rerun of that night that is under way or was interrupted has removed or replaced the file; its own
        # event will follow
        _check_file(extra["accepted_uri"], extra["accepted_sha256"], extra.get("accepted_bytes"), what="batch",
                    gone="a rerun of that night removed it; wait for its event",
                    changed="a rerun of that night replaced it; train on the batch of the newest event")
    return extra


def released_batches(events: Sequence[Any]) -> list[dict[str, Any]]:
    """The extras of release events, oldest first, each checked like :func:`latest_batch` checks a night
    (the file is still the one the audit log recorded: size, then sha256). Every release is its own follow-up
    file, so all of them count, not only the newest; an event re-emitted for the same file (the retry of a
    review task) counts once."""
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for event in events:
        extra = dict(getattr(event, "extra", None) or {})
        missing = [k for k in REQUIRED_RELEASED_EXTRA if k not in extra]
        if missing:
            raise AirflowFailException(f"the triggering release event lacks {missing}; was it published by "
                                       "tunegate's ReviewOperator?")
        if extra["released_sha256"] in seen:
            continue
        _check_file(extra["released_uri"], extra["released_sha256"], extra["released_bytes"], what="file",
                    gone="a released file is never removed by tunegate; restore it from backup",
                    changed="a released file is never rewritten by tunegate; do not train on it")
        seen.add(extra["released_sha256"])
        out.append(extra)
    return out


def _check_file(uri: str, sha256: str, size: Any, *, what: str, gone: str, changed: str) -> None:
    """The file at ``uri`` is still the one an event announced (size, then sha256)."""
    import hashlib

    import fsspec

    try:
        with fsspec.open(uri, "rb") as f:
            digest = hashlib.file_digest(f, "sha256")
            read = f.tell()
    except FileNotFoundError:
        raise AirflowFailException(f"{uri} is gone: {gone}") from None
    if read != size or digest.hexdigest() != sha256:
        raise AirflowFailException(f"{uri} is not the {what} the event announced (sha256 differs): {changed}")


def parquet_row_count(uri: str) -> int:
    """Rows of a Parquet file, from its footer only (no data is read)."""
    import fsspec
    import pyarrow.parquet as pq

    with fsspec.open(uri, "rb") as f:
        return int(pq.read_metadata(f).num_rows)
