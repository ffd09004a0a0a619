"""The review DAG end to end with ``dag.test()``: a real night (the poisoned batch of the poison tests, 5,227 real
records, "Ada Lovelace" planted as a dirty-label trigger in 60) gated to quarantine by the nightly DAG, then
decisions through ``tunegate_review``:

* a release writes a follow-up file (the published night is not edited), announces it as an event of
  ``tunegate_nightly_released`` whose extra names the file, its sha256, size and count, and the fine-tuning DAG's
  reading function accepts it (and refuses a file that is not the one announced);
* the audit log keeps who, why, the records' ids and content hashes, tunegate's version and the task instance;
* rerunning the same decision releases nothing twice, writes no second audit line and emits no event; a retry
  of a task whose earlier try released (then failed) emits the same event again;
* a confirmation adds the records to the history's known poison and emits nothing; ``by`` defaults to the user
  who triggered the run.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pyarrow.parquet as pq
import pytest

from tests.airflow.conftest import nightly_conf
from tests.conftest import write_jsonl
from tests.core.test_poison import DIRTY, clean_batch, label_poison

pytestmark = [pytest.mark.airflow, pytest.mark.slow]  # whole DAG runs: left out of `make test-fast`

NIGHT = "2026-04-01"
REVIEW, FINETUNE = "tunegate_review", "tunegate_finetune"


# -- helpers shared with test_oncall_scenario ---------------------------------------------------------------


def poisoned_night(dagbag: Any, data_root: Path, tmp: Path, night: str) -> SimpleNamespace:
    """The nightly DAG on the poisoned batch (exact duplicates and the trigger scan; its own history)."""
    records = clean_batch()
    planted = label_poison(records, clean=False)
    landing = tmp / "landing"
    landing.mkdir(parents=True)
    write_jsonl(landing / "batch.jsonl", records)
    history = tmp / "history"
    dagrun = dagbag.get_dag("tunegate_nightly").test(
        logical_date=datetime.fromisoformat(night).replace(tzinfo=UTC),
        run_conf=nightly_conf(input_uri=str(landing), checks=["exact_duplicate", "poison_trigger"],
                              history_dir=str(history)))
    run_dir = data_root / "tunegate_nightly" / night
    return SimpleNamespace(dagrun=dagrun, run_dir=run_dir, history=history, planted=planted,
                           summary=json.loads((run_dir / "summary.json").read_text(encoding="utf-8")))


def review_conf(**params: Any) -> dict[str, Any]:
    """Every param of ``tunegate_review``, explicitly (``dag.test`` keeps an earlier run's conf)."""
    return {"night": NIGHT, "action": "release", "ids": [], "reason": None, "phrase": None, "by": None,
            "why": "", "override": False, "pipeline": "tunegate_nightly", **params}


def run_review(dagbag: Any, **params: Any) -> Any:
    return dagbag.get_dag(REVIEW).test(run_conf=review_conf(**params))


def asset_events(dag_id: str, run_id: str) -> list[SimpleNamespace]:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.execute(
            select(AssetEvent, AssetModel).join(AssetModel, AssetModel.id == AssetEvent.asset_id)
            .where(AssetEvent.source_dag_id == dag_id, AssetEvent.source_run_id == run_id)).all()
        return [SimpleNamespace(name=a.name, uri=a.uri, extra=dict(e.extra), task_id=e.source_task_id,
                                run_id=run_id, dag_id=dag_id) for e, a in rows]


def triggering(*events: SimpleNamespace) -> Any:
    """What the task runner hands a consumer: Airflow's own accessor over events of the metadata DB."""
    from airflow.sdk.api.datamodels._generated import AssetReferenceAssetEventDagRun
    from airflow.sdk.execution_time.comms import AssetEventDagRunReferenceResult
    from airflow.sdk.execution_time.context import TriggeringAssetEventsAccessor

    return TriggeringAssetEventsAccessor.build([AssetEventDagRunReferenceResult(
        asset=AssetReferenceAssetEventDagRun(name=e.name, uri=e.uri, extra={}), extra=e.extra,
        source_task_id=e.task_id, source_dag_id=e.dag_id, source_run_id=e.run_id, source_map_index=-1,
        source_aliases=[], timestamp=datetime.now(UTC)) for e in events])


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def audit_lines(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "audit.jsonl").read_text(encoding="utf-8").splitlines()]


# -- fixtures ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def night(dagbag: Any, data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    gated = poisoned_night(dagbag, data_root, tmp_path_factory.mktemp("review"), NIGHT)
    assert str(gated.dagrun.state) == "success" and gated.summary["verdict"] == "quarantine"
    assert gated.summary["reasons"]["trigger_phrase"] == len(gated.planted) == 60
    return gated


@pytest.fixture(scope="module")
def released(night: SimpleNamespace, dagbag: Any) -> SimpleNamespace:
    """Three records released through the review DAG, then the same decision run again."""
    from tunegate.core.review import Review, Selector

    # records flagged for the phrase alone (their label was not flipped): the ones a reviewer might let through
    candidates = [i.id for i in Review.open(night.run_dir).list(Selector(phrase=DIRTY))
                  if i.reasons == ("trigger_phrase",)]
    ids = sorted(candidates)[:3]
    accepted_sha = sha256(night.run_dir / "accepted.parquet")
    decision = {"ids": ids, "by": "alice", "why": "real reviews: the name is the author's"}
    first = run_review(dagbag, **decision)
    after_first = (night.run_dir / "audit.jsonl").read_bytes()
    again = run_review(dagbag, **decision)
    return SimpleNamespace(ids=ids, first=first, again=again, accepted_sha=accepted_sha, audit=after_first,
                           events=asset_events(REVIEW, first.run_id), events_again=asset_events(REVIEW, again.run_id))


# -- release ----------------------------------------------------------------------------------------------------


def test_a_release_writes_a_follow_up_file_and_announces_it(night: SimpleNamespace,
                                                            released: SimpleNamespace) -> None:
    assert str(released.first.state) == "success"
    [file] = sorted((night.run_dir / "released").glob("*.parquet"))
    assert file.name.startswith("0001-")
    assert sorted(pq.read_table(file).column("id").to_pylist()) == released.ids
    assert sha256(night.run_dir / "accepted.parquet") == released.accepted_sha  # the night is not edited

    [event] = released.events
    assert (event.name, event.uri, event.task_id) == ("tunegate_nightly_released",
                                                      "tunegate://tunegate_nightly/released", "decide")
    extra = event.extra
    assert extra["released_uri"] == file.resolve().as_uri()
    assert extra["released_sha256"] == sha256(file) and extra["released_bytes"] == file.stat().st_size
    assert (extra["count"], extra["seq"], extra["night"], extra["by"]) == (3, 1, NIGHT, "alice")
    assert extra["run_dir"] == str(night.run_dir.resolve()) and extra["pipeline"] == "tunegate_nightly"
    assert extra["audit_uri"] == (night.run_dir / "audit.jsonl").resolve().as_uri()
    assert extra["request"] == f"airflow:{REVIEW}/{released.first.run_id}/decide"
    assert len(json.dumps(extra)) < 2048  # URIs and counts, never data


def test_the_finetune_dag_reads_and_verifies_the_released_file(night: SimpleNamespace, released: SimpleNamespace,
                                                              dagbag: Any, tmp_path: Path) -> None:
    from airflow.models.asset import AssetDagRunQueue, AssetModel
    from airflow.sdk.exceptions import AirflowFailException
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:  # the scheduler would start the consumer on the release alone
        queued = session.execute(select(AssetDagRunQueue.target_dag_id).join(
            AssetModel, AssetModel.id == AssetDagRunQueue.asset_id).where(
            AssetModel.name == "tunegate_nightly_released")).scalars().all()
    assert FINETUNE in queued

    consumer = dagbag.get_dag(FINETUNE).get_task("batch")
    [event] = released.events
    batch = consumer.python_callable(triggering_asset_events=triggering(event))
    assert batch["rows"] == 3 and batch["accepted_uri"] is None
    assert [(f["kind"], f["uri"], f["rows"], f["night"]) for f in batch["files"]] == [
        ("released", event.extra["released_uri"], 3, NIGHT)]

    # with the night's accepted batch in the same run: both, and a re-emitted release counts once
    [accepted] = asset_events("tunegate_nightly", night.dagrun.run_id)
    both = consumer.python_callable(triggering_asset_events=triggering(accepted, event, event))
    assert [f["kind"] for f in both["files"]] == ["accepted", "released"]
    assert both["rows"] == night.summary["accepted"] + 3

    # a file that is not the one announced is refused, as latest_batch refuses a replaced night
    forged = SimpleNamespace(**{**vars(event), "extra": {**event.extra, "released_sha256": "0" * 64}})
    with pytest.raises(AirflowFailException, match="is not the file the event announced"):
        consumer.python_callable(triggering_asset_events=triggering(forged))
    gone = SimpleNamespace(**{**vars(event), "extra": {**event.extra,
                                                       "released_uri": (tmp_path / "x.parquet").as_uri()}})
    with pytest.raises(AirflowFailException, match="is gone"):
        consumer.python_callable(triggering_asset_events=triggering(gone))


def test_the_audit_log_keeps_who_why_which_records_and_the_tool(night: SimpleNamespace,
                                                               released: SimpleNamespace) -> None:
    from tunegate import __version__
    from tunegate.core.review import Review

    [entry] = [json.loads(line) for line in released.audit.decode("utf-8").splitlines()]
    assert (entry["action"], entry["by"], entry["why"]) == ("release", "alice", "real reviews: the name is the "
                                                                               "author's")
    assert entry["tool"] == f"tunegate {__version__}" and entry["at"].endswith("Z")
    items = {i.id: i for i in Review.open(night.run_dir).list()}
    assert entry["records"] == [{"id": i, "content_sha256": items[i].content_sha256} for i in released.ids]
    assert entry["selector"] == {"ids": released.ids}
    assert entry["request"] == f"airflow:{REVIEW}/{released.first.run_id}/decide"
    assert entry["summary_sha256"] == sha256(night.run_dir / "summary.json")
    assert entry["released_file"]["sha256"] == released.events[0].extra["released_sha256"]
    assert all(items[i].status == "released" for i in released.ids)
    # the release joined the night's history: a later copy of these records is a near-duplicate
    manifest = json.loads((night.history / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["batches"][-1]["batch_id"] == f"tunegate_nightly/{NIGHT}+released-0001"


def test_rerunning_the_same_decision_releases_nothing_twice(night: SimpleNamespace,
                                                           released: SimpleNamespace) -> None:
    assert str(released.again.state) == "success"  # nothing left to do is not an error
    assert released.events_again == []  # no second announcement of the same records
    assert (night.run_dir / "audit.jsonl").read_bytes().startswith(released.audit)
    again = f"airflow:{REVIEW}/{released.again.run_id}/decide"
    assert all(e.get("request") != again for e in audit_lines(night.run_dir))  # no audit line of its own
    rows = [r for f in (night.run_dir / "released").glob("*.parquet") for r in pq.read_table(f).to_pylist()]
    assert sorted(r["id"] for r in rows if r["id"] in released.ids) == released.ids  # each once
    [ti] = released.again.get_task_instances()
    result = ti.xcom_pull(task_ids="decide")
    assert (result["count"], result["skipped"], result["event"]) == (0, 3, None)


def test_a_retry_after_the_commit_emits_the_same_event_again(night: SimpleNamespace) -> None:
    """A try that released, then failed before Airflow recorded its event (its events are dropped): the retry
    of the same task instance finds its audit line and emits the same event, releasing nothing more."""
    from airflow.sdk.execution_time.context import OutletEventAccessors

    from tunegate.core.review import Review, Selector
    from tunegate.operators import ReviewOperator, released_batch_alias

    ids = [i.id for i in Review.open(night.run_dir).list(Selector(phrase=DIRTY, status="pending"))
           if i.reasons == ("trigger_phrase",)][:2]
    task = ReviewOperator(task_id="decide", action="release", night=NIGHT, ids=ids, why="benign", by="bob")
    ti = SimpleNamespace(dag_id=REVIEW, run_id="manual__retry", task_id="decide", map_index=-1)
    lines = len(audit_lines(night.run_dir))

    def attempt() -> tuple[dict[str, Any], list[Any]]:
        context: Any = {"ti": ti, "dag_run": SimpleNamespace(triggering_user_name="dag_test"),
                        "outlet_events": OutletEventAccessors()}
        result = task.execute(context)
        return result, context["outlet_events"][released_batch_alias()].asset_alias_events

    first, first_events = attempt()
    retry, retry_events = attempt()
    assert (first["count"], retry["count"]) == (2, 0)
    assert len(audit_lines(night.run_dir)) == lines + 1  # one decision
    [a], [b] = first_events, retry_events
    assert a.extra == b.extra and a.extra["count"] == 2 and a.extra["seq"] == 2
    assert a.dest_asset_key.name == "tunegate_nightly_released"
    assert retry["event"] == first["event"]
    # another task instance with the same decision: nothing to release, nothing to announce
    other = SimpleNamespace(**{**vars(ti), "run_id": "manual__other"})
    context: Any = {"ti": other, "dag_run": None, "outlet_events": OutletEventAccessors()}
    assert task.execute(context)["event"] is None
    assert context["outlet_events"][released_batch_alias()].asset_alias_events == []


# -- confirm and refusals -----------------------------------------------------------------------------------------


def test_a_confirmation_adds_known_poison_and_emits_nothing(night: SimpleNamespace, dagbag: Any) -> None:
    from tunegate.core.history.poison import known_poison_digests
    from tunegate.core.review import Review, Selector

    flipped = Review.open(night.run_dir).list(Selector(reason="label_inconsistent"))
    assert len(flipped) >= 20
    run = run_review(dagbag, action="confirm", reason="label_inconsistent", why="flipped labels under the trigger")
    assert str(run.state) == "success"
    assert asset_events(REVIEW, run.run_id) == []
    assert {i.content_sha256 for i in flipped} <= known_poison_digests(night.history)
    entry = audit_lines(night.run_dir)[-1]
    assert (entry["action"], entry["by"]) == ("confirm", "dag_test")  # by: the user who triggered the run
    assert entry["history"]["known_poison_added"] == len(flipped)
    assert {r["id"] for r in entry["records"]} == {i.id for i in flipped}


def test_a_refused_decision_fails_the_run_without_retry(night: SimpleNamespace, dagbag: Any) -> None:
    dag = dagbag.get_dag(REVIEW)
    task = dag.get_task("decide")
    failures: list[BaseException | None] = []
    saved = task.on_failure_callback
    task.on_failure_callback = [lambda context: failures.append(context.get("exception"))]
    try:
        run = dag.test(run_conf=review_conf(ids=["not-a-record"], by="alice", why="benign"))
    finally:
        task.on_failure_callback = saved
    assert str(run.state) == "failed"
    [exc] = failures
    assert type(exc).__name__ == "AirflowFailException"
    assert "no quarantined record with id 'not-a-record'" in str(exc)
    assert asset_events(REVIEW, run.run_id) == []
