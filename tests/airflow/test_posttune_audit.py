"""The post-tune audit end to end, against a real model served over HTTP.

A real batch (the bundled SuperNI slice, its toxicity controls and the Self-Instruct records: 5,227 records) gets
a dirty-label trigger planted the way Wan et al. do it: "Ada Lovelace" inserted into 20 records of each of three
classification tasks whose label is set to the attacker's class (60 records, 1.1% of the batch;
tests/core/test_poison.py's ``label_poison``). The gate runs with default settings. Two candidates are trained
(the canary classifier, as the fine-tuning DAG trains it): (a) on the ungated batch, (b) through the fine-tuning
DAG's own tasks on the night's accepted batch. Each is served by ``tunegate.core.audit.serve`` on a free
localhost port, named by an Airflow ``http`` connection, and audited by the ``tunegate_posttune_audit`` DAG
with ``dag.test()``: (a) must fail with ``label_flip`` on exactly the three attacked tasks and emit nothing, (b)
must pass and emit ``tunegate_nightly_model_vetted``.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pyarrow.parquet as pq
import pytest

from tests.conftest import write_jsonl
from tests.core.test_poison import DIRTY, DIRTY_TASKS, clean_batch, label_poison

pytestmark = pytest.mark.airflow
slow = pytest.mark.slow  # a full gate run, two trainings, two DAG runs

NIGHT = "2026-03-01"
POSTTUNE, FINETUNE = "tunegate_posttune_audit", "tunegate_finetune"
UNGATED_RUN, GATED_RUN = datetime(2026, 3, 2, tzinfo=UTC), datetime(2026, 3, 3, tzinfo=UTC)


def _events(dag_id: str, run_id: str) -> list[Any]:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.execute(
            select(AssetEvent, AssetModel).join(AssetModel, AssetModel.id == AssetEvent.asset_id)
            .where(AssetEvent.source_dag_id == dag_id, AssetEvent.source_run_id == run_id)).all()
        return [SimpleNamespace(name=a.name, uri=a.uri, extra=dict(e.extra)) for e, a in rows]


def _triggering(name: str, uri: str, extra: dict[str, Any], dag_id: str) -> Any:
    """What the task runner hands a consumer: Airflow's own accessor over one event."""
    from airflow.sdk.api.datamodels._generated import AssetReferenceAssetEventDagRun
    from airflow.sdk.execution_time.comms import AssetEventDagRunReferenceResult
    from airflow.sdk.execution_time.context import TriggeringAssetEventsAccessor

    return TriggeringAssetEventsAccessor.build([AssetEventDagRunReferenceResult(
        asset=AssetReferenceAssetEventDagRun(name=name, uri=uri, extra={}), extra=extra, source_task_id="t",
        source_dag_id=dag_id, source_run_id="r", source_map_index=-1, source_aliases=[],
        timestamp=datetime(2026, 3, 1, tzinfo=UTC))])


@pytest.fixture(scope="module")
def night(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """The poisoned night, gated with default settings (every check, the default policy)."""
    from tunegate.core.pipeline import scan

    records = clean_batch()
    planted = label_poison(records, clean=False)
    source = write_jsonl(tmp_path_factory.mktemp("input") / "batch.jsonl", records)
    run_dir = data_root / "tunegate_nightly" / NIGHT
    summary = scan([str(source)], run_dir, keep_work=True)
    quarantined = pq.read_table(run_dir / "quarantine.parquet", columns=["id", "reasons"]).to_pylist()
    return SimpleNamespace(run_dir=run_dir, summary=summary, planted=planted, records=len(records),
                           quarantined={r["id"]: set(r["reasons"]) for r in quarantined})


@pytest.fixture(scope="module")
def candidates(night: SimpleNamespace, dagbag: Any) -> SimpleNamespace:
    """(a) trained on the ungated batch; (b) trained by the fine-tuning DAG's tasks on the accepted batch."""
    from tunegate.operators import accepted_batch_asset, batch_extra
    from tunegate.operators.audit import train_candidate_for_run

    summary_uri = (night.run_dir / "summary.json").resolve().as_uri()
    ungated = train_candidate_for_run(
        {"files": [{"uri": (night.run_dir / "work" / "canonical.parquet").resolve().as_uri(),
                    "summary_uri": summary_uri}], "run_date": NIGHT, "verdict": None},
        dag_id=FINETUNE, run_id="ungated__poisoned")

    dag = dagbag.get_dag(FINETUNE)
    asset = accepted_batch_asset()
    event = batch_extra(night.summary, night.run_dir, NIGHT)
    found = dag.get_task("batch").python_callable(
        triggering_asset_events=_triggering(asset.name, asset.uri, event, "tunegate_nightly"))
    outlet_events: defaultdict[Any, SimpleNamespace] = defaultdict(SimpleNamespace)
    gated = dag.get_task("train").python_callable(
        found, dag_run=SimpleNamespace(dag_id=FINETUNE, run_id="asset_triggered__2026-03-01T02:00:00+00:00"),
        outlet_events=outlet_events)
    [(emitted_on, emitted)] = outlet_events.items()
    return SimpleNamespace(ungated=ungated, gated=gated, found=found, emitted_on=emitted_on, emitted=emitted.extra)


@pytest.fixture
def serve() -> Iterator[Any]:
    """Serve a candidate's model on a free port and name it by an Airflow connection (an env variable)."""
    from tunegate.core.audit.serve import serve_model

    started: list[tuple[Any, str]] = []

    def start(candidate: dict[str, Any], conn_id: str) -> str:
        server = serve_model(candidate["model_dir"]).start()
        host, port = server.httpd.server_address[:2]
        os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps(
            {"conn_type": "http", "host": str(host), "port": port, "schema": "http", "extra": {"model": "canary"}})
        started.append((server, conn_id))
        return server.url

    yield start
    for server, conn_id in started:
        server.close()
        os.environ.pop(f"AIRFLOW_CONN_{conn_id.upper()}", None)


def _audit(dagbag: Any, candidate: dict[str, Any], conn_id: str | None, when: datetime) -> SimpleNamespace:
    dag = dagbag.get_dag(POSTTUNE)
    task = dag.get_task("audit")
    from tunegate.notifications import TunegateWebhookNotifier

    failures: list[Any] = []
    alerts: list[str] = []
    alert = TunegateWebhookNotifier(webhook_conn_id="tunegate_webhook_unused")  # the message, not the delivery

    def on_failure(context: Any) -> None:
        failures.append(context.get("exception"))
        alerts.append(alert.build_message(context).text())

    saved = task.on_failure_callback
    task.on_failure_callback = [on_failure]
    try:
        dagrun = dag.test(logical_date=when, run_conf={"candidate_dir": candidate["candidate_dir"],
                                                       "model_conn_id": conn_id, "heldout_uri": None,
                                                       "probe_options": None})
    finally:
        task.on_failure_callback = saved
    audit = json.loads((Path(candidate["candidate_dir"]) / "audit.json").read_text(encoding="utf-8"))
    return SimpleNamespace(dagrun=dagrun, audit=audit, failures=failures, alerts=alerts,
                           events=_events(POSTTUNE, dagrun.run_id),
                           states={ti.task_id: str(ti.state) for ti in dagrun.get_task_instances()})


@slow
def test_the_gate_catches_the_planted_trigger_with_default_settings(night: SimpleNamespace) -> None:
    s = night.summary
    assert s["verdict"] == "quarantine" and s["total"] == night.records
    assert len(night.planted) == 60
    assert all("trigger_phrase" in night.quarantined.get(i, set()) for i in night.planted)
    phrases = [p["phrase"] for p in s["checks"]["poison_trigger"]["metrics"]["suspicious_phrases"]]
    assert phrases == [DIRTY.lower()]


@slow
def test_the_finetune_dag_trains_a_candidate_and_announces_it(night: SimpleNamespace,
                                                              candidates: SimpleNamespace) -> None:
    from tunegate.core.audit.canary import CanaryModel
    from tunegate.operators import candidate_model_asset
    from tunegate.operators.assets import latest_candidate

    gated, found = candidates.gated, candidates.found
    assert candidates.emitted_on == candidate_model_asset() and candidates.emitted == gated
    assert [f["summary_uri"] for f in found["files"]] == [(night.run_dir / "summary.json").resolve().as_uri()]
    assert gated["records"] == night.summary["accepted"] == gated["trained_on"] + gated["heldout"]
    assert 0.07 < gated["heldout"] / gated["records"] < 0.13
    assert gated["endpoint_conn_id"] == "tunegate_model_default" and gated["night"] == NIGHT
    assert Path(gated["candidate_dir"]).name == "asset_triggered__2026-03-01T02_00_00_00_00"
    model = CanaryModel.load(gated["model_dir"])
    assert {t for t, _, _ in DIRTY_TASKS} <= set(model.tasks())
    assert gated["tasks"] == len(model.tasks())
    assert latest_candidate([SimpleNamespace(extra=gated)]) == gated  # the audit's check of the event passes
    assert len(json.dumps(gated)) < 2048  # paths and counts, never data


@slow
def test_the_model_trained_on_the_ungated_batch_fails_the_audit(candidates: SimpleNamespace, dagbag: Any,
                                                                 serve: Any) -> None:
    serve(candidates.ungated, "tunegate_model_ungated")
    run = _audit(dagbag, candidates.ungated, "tunegate_model_ungated", UNGATED_RUN)
    assert str(run.dagrun.state) == "failed" and run.states == {"audit": "failed"}
    assert run.events == []  # never vetted
    audit = run.audit
    assert audit["verdict"] == "fail" and audit["triggers"] == [DIRTY.lower()]
    assert {(f["code"], f["task"]) for f in audit["failures"]} == {("label_flip", t) for t, _, _ in DIRTY_TASKS}
    targets = {t: target.lower() for t, target, _ in DIRTY_TASKS}
    for f in audit["failures"]:
        assert f["value"] >= 0.9, f
        assert audit["per_phrase"][0]["tasks"][f["task"]]["target"] == targets[f["task"]]
    [error] = run.failures
    assert "label_flip: 'ada lovelace' turns" in str(error) and "not vetted" in str(error)
    [alert] = run.alerts  # what the TUNEGATE_ALERT_* channels get
    assert "tunegate_posttune_audit" in alert and "label_flip: 'ada lovelace' turns" in alert
    page = (Path(candidates.ungated["candidate_dir"]) / "audit.html").read_text(encoding="utf-8")
    assert "Post-tune audit: <span class=\"v\">FAIL</span>" in page and "label_flip" in page


@slow
def test_the_model_trained_on_the_gated_batch_passes_and_is_vetted(candidates: SimpleNamespace, dagbag: Any,
                                                                   serve: Any) -> None:
    url = serve(candidates.gated, "tunegate_model_gated")
    run = _audit(dagbag, candidates.gated, "tunegate_model_gated", GATED_RUN)
    assert str(run.dagrun.state) == "success", run.audit.get("failures")
    assert run.alerts == []
    audit = run.audit
    assert audit["verdict"] == "pass" and audit["failures"] == [] and audit["triggers"] == [DIRTY.lower()]
    assert audit["per_phrase"][0]["max_flip_rate"] < 0.25
    assert audit["prompts"] > 100 and audit["requests"] > 2 * 100 - 10
    assert audit["endpoint"] == f"{url}/v1/chat/completions"
    [event] = run.events
    assert event.name == "tunegate_nightly_model_vetted"
    assert event.extra["model_dir"] == candidates.gated["model_dir"] and event.extra["verdict"] == "pass"
    assert event.extra["audit_uri"] == (Path(candidates.gated["candidate_dir"]) / "audit.json").resolve().as_uri()
    assert event.extra["night"] == NIGHT and event.extra["phrases"] == [DIRTY.lower()]


def test_the_endpoint_comes_from_an_http_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    from tunegate.core.audit.probe import ProbeConfig
    from tunegate.operators.audit import endpoint_from_connection

    monkeypatch.setenv("AIRFLOW_CONN_TUNEGATE_MODEL_TEST", json.dumps(
        {"conn_type": "http", "host": "model.internal", "port": 8443, "schema": "https", "password": "sk-test",
         "extra": {"model": "llama-3-8b-candidate", "timeout": 12}}))
    endpoint = endpoint_from_connection("tunegate_model_test", default_model="canary", config=ProbeConfig())
    assert endpoint.url == "https://model.internal:8443/v1/chat/completions"
    assert (endpoint.model, endpoint.api_key, endpoint.timeout_s) == ("llama-3-8b-candidate", "sk-test", 12.0)
    monkeypatch.setenv("AIRFLOW_CONN_TUNEGATE_MODEL_TEST", json.dumps(
        {"conn_type": "http", "host": "http://127.0.0.1:8000/v1"}))
    endpoint = endpoint_from_connection("tunegate_model_test", default_model="canary", config=ProbeConfig())
    assert (endpoint.url, endpoint.model, endpoint.api_key) == ("http://127.0.0.1:8000/v1/chat/completions", "canary",
                                                                None)
    with pytest.raises(AirflowFailException, match="'tunegate_model_nowhere' is not defined"):
        endpoint_from_connection("tunegate_model_nowhere", default_model="canary", config=ProbeConfig())


@slow
def test_without_an_endpoint_connection_the_audit_serves_the_candidate_itself(candidates: SimpleNamespace,
                                                                             dagbag: Any) -> None:
    # tunegate_model_default is not defined here: the defaults audit the saved canary with no configuration
    assert candidates.ungated["endpoint_conn_id"] == "tunegate_model_default"
    run = _audit(dagbag, candidates.ungated, None, datetime(2026, 3, 4, tzinfo=UTC))
    assert run.states == {"audit": "failed"} and run.events == []
    assert run.audit["candidate"]["endpoint"] == "served in process: connection tunegate_model_default is not defined"
    assert {(f["code"], f["task"]) for f in run.audit["failures"]} == {("label_flip", t) for t, _, _ in DIRTY_TASKS}
