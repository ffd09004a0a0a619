"""The on-call loop of docs/review.md, walked through Airflow on a poisoned night: the nightly DAG quarantines a
dirty-label trigger campaign and its gate sends the webhook alert (a real HTTP server on loopback) -> the alert
names the phrase and links the night's report -> the report exists and names the phrase -> the engineer releases
two records through ``tunegate_review`` -> a follow-up event of ``tunegate_nightly_released`` that the fine-tuning
DAG reads -> the decision's line in the night's audit log. Then the same loop from the served pages (the tunegate
plugin): the report opens for a reader, an editor releases one more record on the review page's JSON API, and that
release is an event of the same Asset, recorded as the signed-in user."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import unquote, urlparse

import pyarrow.parquet as pq
import pytest

from tests.airflow.test_notifiers import WEBHOOK_TOKEN, HttpSink
from tests.airflow.test_plugin import bearer
from tests.airflow.test_review import asset_events, poisoned_night, review_conf, sha256, triggering
from tests.core.test_poison import DIRTY

pytestmark = [pytest.mark.airflow, pytest.mark.slow]  # whole DAG runs: left out of `make test-fast`

NIGHT = "2026-04-02"


@pytest.fixture
def alerts(monkeypatch: pytest.MonkeyPatch) -> Iterator[HttpSink]:
    """The webhook connection pointing at a loopback server; no served-report URL (plain file links)."""
    sink = HttpSink()
    monkeypatch.setenv("AIRFLOW_CONN_TUNEGATE_WEBHOOK_DEFAULT", json.dumps({
        "conn_type": "tunegate_webhook", "host": sink.url, "password": WEBHOOK_TOKEN,
        "extra": {"endpoint": "/hooks/tunegate", "timeout": 5}}))
    monkeypatch.delenv("TUNEGATE_REPORT_BASE_URL", raising=False)
    yield sink
    sink.close()


def _report_path(url: str, night: SimpleNamespace) -> Path:
    """Where the alert's link leads on disk: a file:// URI, or a URL whose path ends in the night's report."""
    if url.startswith("file://"):
        return Path(unquote(urlparse(url).path))
    assert f"tunegate_nightly/{NIGHT}/report" in url, url  # a served report (the tunegate plugin, if set up)
    return night.run_dir / "report.html"


def test_alert_report_release_event_audit(alerts: HttpSink, dagbag: Any, data_root: Path, tmp_path: Path,
                                          caplog: pytest.LogCaptureFixture) -> None:
    from tunegate.core.review import Review, Selector
    from tunegate.notifications import TunegateWebhookNotifier

    # 1. the night runs; its gate alerts on quarantine (as TUNEGATE_ALERT_WEBHOOK_CONN_ID wires it in a deployment)
    gate = dagbag.get_dag("tunegate_nightly").get_task("gate")
    saved = gate.on_quarantine
    gate.on_quarantine = [TunegateWebhookNotifier()]
    try:
        night = poisoned_night(dagbag, data_root, tmp_path, NIGHT)
    finally:
        gate.on_quarantine = saved
    assert str(night.dagrun.state) == "success" and night.summary["verdict"] == "quarantine"

    # 2. the alert: the night, the verdict, the campaign's phrase, the report link
    [request] = alerts.requests
    alert = request.json
    assert (alert["event"], alert["verdict"], alert["run_date"]) == ("quarantine", "quarantine", NIGHT)
    assert alert["suspicious_phrases"][0]["phrase"] == DIRTY.lower()
    # the campaign's 60 records and the bundled Self-Instruct slice's one natural refusal ("... I cannot answer
    # this."), which the quality suite sets aside as gx_refusal
    assert alert["counts"]["quarantined"] == 61
    report = _report_path(alert["report_url"], night)

    # 3. the report exists and names the phrase
    assert report.resolve() == (night.run_dir / "report.html").resolve()
    page = report.read_text(encoding="utf-8")
    assert DIRTY.lower() in page.lower()

    # 4. the engineer lists the campaign's records (tunegate review list --phrase) and releases two of them
    items = Review.open(night.run_dir).list(Selector(phrase=DIRTY))
    assert {i.id for i in items} == night.planted
    ids = sorted(i.id for i in items if i.reasons == ("trigger_phrase",))[:2]
    review = dagbag.get_dag("tunegate_review").test(run_conf=review_conf(
        night=NIGHT, ids=ids, by="oncall-dana", why="false alarm: Ada Lovelace is the book's subject"))
    assert str(review.state) == "success"

    # 5. the follow-up Asset event, and the fine-tuning DAG trains on the released file
    [event] = asset_events("tunegate_review", review.run_id)
    assert event.name == "tunegate_nightly_released"
    [file] = sorted((night.run_dir / "released").glob("*.parquet"))
    assert event.extra["released_uri"] == file.resolve().as_uri() and event.extra["released_sha256"] == sha256(file)
    assert (event.extra["count"], event.extra["night"], event.extra["by"]) == (2, NIGHT, "oncall-dana")
    assert sorted(pq.read_table(file).column("id").to_pylist()) == ids
    caplog.set_level("INFO")
    consumer = dagbag.get_dag("tunegate_finetune").get_task("batch")
    batch = consumer.python_callable(triggering_asset_events=triggering(event))
    assert batch["rows"] == 2 and batch["files"][0]["uri"] == event.extra["released_uri"]
    assert f"training batch: 2 records from {file.resolve().as_uri()}" in caplog.text

    # 6. the audit log entry: who, why, which records (id and content hash), the file, the tool, the task
    [entry] = [json.loads(line) for line in (night.run_dir / "audit.jsonl").read_text(encoding="utf-8").splitlines()]
    assert (entry["action"], entry["by"]) == ("release", "oncall-dana")
    assert entry["why"] == "false alarm: Ada Lovelace is the book's subject"
    assert [r["id"] for r in entry["records"]] == ids and all(len(r["content_sha256"]) == 64 for r in entry["records"])
    assert entry["released_file"]["sha256"] == event.extra["released_sha256"]
    assert entry["tool"].startswith("tunegate ") and entry["request"] == event.extra["request"]
    assert entry["verdict"] == "quarantine" and entry["batch_id"] == f"tunegate_nightly/{NIGHT}"


def test_release_on_the_served_review_page_is_announced(dagbag: Any, data_root: Path, tmp_path: Path,
                                                        client: Any, tokens: dict[str, str]) -> None:
    """The engineer opens the alert's link on the API server and releases there: same file, same audit line, same
    Asset event as the review DAG's (``tunegate.plugins.events``), by the authenticated user."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    # the fine-tuning DAG is deployed: its schedule (accepted | released) puts the released Asset in the DB

    DagBundlesManager().sync_bundles_to_db()
    bag = DagBag(dag_folder=str(tmp_path / "no-dags"))
    bag.bag_dag(dagbag.get_dag("tunegate_finetune"))
    sync_bag_to_db(bag, "dags-folder", None)
    night = poisoned_night(dagbag, data_root, tmp_path, "2026-04-03")
    base = "/tunegate/tunegate_nightly/2026-04-03"
    report = client.get(f"{base}/report", headers=bearer(tokens["victor"]))
    assert report.status_code == 200 and DIRTY.lower() in report.text.lower()
    items = client.get(f"{base}/api/items?phrase={DIRTY}", headers=bearer(tokens["victor"])).json()["items"]
    assert {i["id"] for i in items} == night.planted
    record = sorted(i["id"] for i in items if i["reasons"] == ["trigger_phrase"])[0]
    with create_session() as session:
        before = session.scalar(select(AssetEvent.id).order_by(AssetEvent.id.desc()).limit(1)) or 0
    body = {"ids": [record], "why": "the name is the review's subject"}
    answer = client.post(f"{base}/api/release", json=body, headers=bearer(tokens["alice"]))
    assert answer.status_code == 200, answer.text
    assert answer.json()["count"] == 1 and answer.json()["by"] == "alice"
    assert answer.json()["announced"].startswith("Announced")
    [file] = sorted((night.run_dir / "released").glob("*.parquet"))
    with create_session() as session:
        rows = session.execute(select(AssetEvent, AssetModel).join(AssetModel, AssetModel.id == AssetEvent.asset_id)
                               .where(AssetEvent.id > before)).all()
        events = [SimpleNamespace(name=a.name, extra=dict(e.extra)) for e, a in rows]
    [event] = events
    assert event.name == "tunegate_nightly_released"
    assert event.extra["released_uri"] == file.resolve().as_uri() and event.extra["released_sha256"] == sha256(file)
    assert (event.extra["count"], event.extra["by"], event.extra["night"]) == (1, "alice", "2026-04-03")
    from tunegate.operators.assets import released_batches

    [batch] = released_batches([event])
    assert batch["released_uri"] == file.resolve().as_uri()
    [entry] = [json.loads(line) for line in (night.run_dir / "audit.jsonl").read_text(encoding="utf-8").splitlines()]
    assert (entry["action"], entry["by"], [r["id"] for r in entry["records"]]) == ("release", "alice", [record])
    # the same decision again releases nothing and announces nothing
    again = client.post(f"{base}/api/release", json=body, headers=bearer(tokens["alice"]))
    assert again.status_code == 200 and again.json()["count"] == 0 and again.json()["announced"] is None
