"""End-to-end runs of the nightly DAG with ``dag.test()``: the quarantine path on the bundled sample batch
(outputs, Asset event, consumer queued and fed) and the halt path (gate fails, nothing published)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pyarrow.parquet as pq
import pytest

from tests.airflow.conftest import SAMPLES, nightly_conf

pytestmark = [pytest.mark.airflow, pytest.mark.slow]  # whole DAG runs: left out of `make test-fast`

NIGHT = datetime(2026, 1, 1, tzinfo=UTC)
HALT_NIGHT = datetime(2026, 1, 2, tzinfo=UTC)
OUTPUTS = ("accepted.parquet", "quarantine.parquet", "rejected.jsonl", "summary.json", "report.html")


def _events(dag_id: str, run_id: str) -> list[Any]:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.execute(
            select(AssetEvent, AssetModel).join(AssetModel, AssetModel.id == AssetEvent.asset_id)
            .where(AssetEvent.source_dag_id == dag_id, AssetEvent.source_run_id == run_id)).all()
        return [SimpleNamespace(name=a.name, uri=a.uri, extra=dict(e.extra), task_id=e.source_task_id)
                for e, a in rows]


def _states(dagrun: Any) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in dagrun.get_task_instances()}


@pytest.fixture(scope="module")
def nightly(dagbag: Any, data_root: Path) -> SimpleNamespace:
    dag = dagbag.get_dag("tunegate_nightly")
    dagrun = dag.test(logical_date=NIGHT, run_conf=nightly_conf())
    run_dir = data_root / "tunegate_nightly" / "2026-01-01"
    return SimpleNamespace(dag=dag, dagrun=dagrun, run_dir=run_dir,
                           summary=json.loads((run_dir / "summary.json").read_text(encoding="utf-8")))


@pytest.fixture(scope="module")
def halted(dagbag: Any, data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    # The sample batch quarantines 10 of 1010 records: a policy that tolerates none halts it.
    policy = tmp_path_factory.mktemp("policy") / "strict.yaml"
    policy.write_text("max_quarantined_fraction: 0.0\n", encoding="utf-8")
    dag = dagbag.get_dag("tunegate_nightly")
    failures: list[BaseException | str | None] = []
    gate = dag.get_task("gate")
    saved = gate.on_failure_callback
    gate.on_failure_callback = [lambda context: failures.append(context.get("exception"))]
    try:
        dagrun = dag.test(logical_date=HALT_NIGHT, run_conf=nightly_conf(policy_file=str(policy)))
    finally:
        gate.on_failure_callback = saved
    run_dir = data_root / "tunegate_nightly" / "2026-01-02"
    return SimpleNamespace(dagrun=dagrun, run_dir=run_dir, failures=failures,
                           summary=json.loads((run_dir / "summary.json").read_text(encoding="utf-8")))


def test_nightly_run_succeeds_with_the_quarantine_verdict(nightly: SimpleNamespace) -> None:
    assert str(nightly.dagrun.state) == "success"
    assert set(_states(nightly.dagrun).values()) == {"success"}
    s = nightly.summary
    assert s["verdict"] == "quarantine"
    # every input record lands in exactly one place; the planted problems are found
    assert s["total"] == (SAMPLES / "batch.jsonl").read_bytes().count(b"\n") == 1014
    assert s["accepted"] + s["quarantined"] + s["rejected"] == s["total"]
    assert s["rejected"] == 4 and s["quarantined"] >= 10
    assert s["reasons"]["exact_duplicate"] == 6


def test_outputs_live_in_the_run_dir_of_the_logical_date(nightly: SimpleNamespace) -> None:
    for name in OUTPUTS:
        assert (nightly.run_dir / name).is_file(), name
    assert (nightly.run_dir / "work" / "canonical.parquet").is_file()
    assert pq.read_metadata(nightly.run_dir / "accepted.parquet").num_rows == nightly.summary["accepted"]


def test_xcom_carries_counts_and_uris_not_data(nightly: SimpleNamespace) -> None:
    tis = {ti.task_id: ti for ti in nightly.dagrun.get_task_instances()}
    for task_id in ("ingest", "validate", "scan", "gate", "publish"):
        value = tis[task_id].xcom_pull(task_ids=task_id)
        assert isinstance(value, dict), task_id
        assert len(json.dumps(value)) < 4096, task_id
    assert tis["ingest"].xcom_pull(task_ids="ingest")["records"] == 1010


def test_gate_publishes_the_accepted_batch_asset_with_its_extra(nightly: SimpleNamespace) -> None:
    events = _events("tunegate_nightly", nightly.dagrun.run_id)
    assert len(events) == 1
    event = events[0]
    assert (event.name, event.uri, event.task_id) == ("tunegate_nightly_accepted", "tunegate://tunegate_nightly/accepted",
                                                      "publish")
    extra, s = event.extra, nightly.summary
    assert extra["verdict"] == "quarantine"
    assert extra["counts"] == {k: s[k] for k in ("total", "accepted", "quarantined", "rejected")}
    assert extra["accepted_uri"] == (nightly.run_dir / "accepted.parquet").resolve().as_uri()
    assert extra["report_uri"] == (nightly.run_dir / "report.html").resolve().as_uri()
    assert extra["run_dir"] == str(nightly.run_dir.resolve())
    assert extra["run_date"] == "2026-01-01"
    assert extra["top_reasons"]["exact_duplicate"] == 6


def test_consumer_dag_is_queued_and_reads_the_batch_from_the_event(nightly: SimpleNamespace, dagbag: Any,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    from airflow.models.asset import AssetDagRunQueue
    from airflow.sdk.api.datamodels._generated import AssetReferenceAssetEventDagRun
    from airflow.sdk.execution_time.comms import AssetEventDagRunReferenceResult
    from airflow.sdk.execution_time.context import TriggeringAssetEventsAccessor
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        queued = session.scalars(select(AssetDagRunQueue.target_dag_id)).all()
    assert "tunegate_finetune" in queued  # the scheduler would start it now

    # What the task runner hands the consumer: Airflow's own accessor over the event in the metadata DB.
    [event] = _events("tunegate_nightly", nightly.dagrun.run_id)
    reference = AssetEventDagRunReferenceResult(
        asset=AssetReferenceAssetEventDagRun(name=event.name, uri=event.uri, extra={}), extra=event.extra,
        source_task_id="publish", source_dag_id="tunegate_nightly", source_run_id=nightly.dagrun.run_id,
        source_map_index=-1, source_aliases=[], timestamp=NIGHT)
    triggering = TriggeringAssetEventsAccessor.build([reference])
    consumer = dagbag.get_dag("tunegate_finetune").get_task("batch")
    caplog.set_level("INFO")
    batch = consumer.python_callable(triggering_asset_events=triggering)
    accepted = nightly.summary["accepted"]
    assert batch["rows"] == accepted and 900 < accepted < 1010
    assert batch["accepted_uri"] == event.extra["accepted_uri"]
    assert f"training batch: {accepted} records" in caplog.text


def test_halt_fails_the_gate_without_retry_and_publishes_nothing(halted: SimpleNamespace) -> None:
    from tunegate.core.gate import halt_message

    assert str(halted.dagrun.state) == "failed"
    states = _states(halted.dagrun)
    assert states == {"ingest": "success", "validate": "success", "scan": "success", "gate": "failed",
                      "publish": "upstream_failed"}
    assert halted.summary["verdict"] == "halt"
    assert any("max_quarantined_fraction is 0.0%" in r for r in halted.summary["halt_reasons"])
    assert _events("tunegate_nightly", halted.dagrun.run_id) == []
    # the failure carries exactly the bounded, readable halt message
    [exc] = halted.failures
    assert type(exc).__name__ == "AirflowFailException"
    assert str(exc) == halt_message(halted.summary)
    assert str(exc).startswith("tunegate verdict HALT: 1014 records")
    # no accepted.parquet a consumer could pick up: the passing records are held, the set is still committed
    assert not (halted.run_dir / "accepted.parquet").exists()
    assert halted.summary["accepted"] == 0 and halted.summary["outputs"]["held"] == "held.parquet"
    assert pq.read_metadata(halted.run_dir / "held.parquet").num_rows == halted.summary["held"]
    assert halted.summary["held"] + halted.summary["quarantined"] + halted.summary["rejected"] == 1014
    assert "held.parquet" in halted.summary["commit"]["files"]
    assert len(str(exc)) < 2000
