"""tunegate on a production-shaped Airflow: PostgreSQL metadata DB, CeleryExecutor with a Celery worker on
Redis, scheduler, dag-processor and api-server as separate processes.

``tunegate_nightly`` is triggered through the REST API on the bundled sample batch (planted duplicates,
malformed records, label errors), and the test waits for it and asserts what an operator relies on: the
quarantine verdict and its outputs, the Asset event with counts and report URI, the asset-triggered
``tunegate_finetune`` run that read the accepted batch from the event, and the alert delivered to a webhook
(``TUNEGATE_ALERT_WEBHOOK_CONN_ID`` names the connection the DAG's notifiers use).
"""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from types import SimpleNamespace
from typing import Any

import pyarrow.parquet as pq
import pytest

from tests.integration.airflow_stack import AirflowStack
from tests.integration.conftest import REPO, WEBHOOK_ENDPOINT, WebhookReceiver

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

NIGHTLY, FINETUNE = "tunegate_nightly", "tunegate_finetune"
SAMPLE = REPO / "samples" / "nightly"
DAGS_PARSED_S = 240
NIGHTLY_DONE_S = 480
CONSUMER_DONE_S = 240


def _dag_ready(stack: AirflowStack, dag_id: str) -> dict[str, Any] | None:
    status, body = stack.api("GET", f"/api/v2/dags/{dag_id}")
    return body if status == 200 else None


def _run_state(stack: AirflowStack, dag_id: str, run_id: str) -> dict[str, Any] | None:
    status, body = stack.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}")
    assert status == 200, body
    return body if body["state"] in ("success", "failed") else None


def _task_states(stack: AirflowStack, dag_id: str, run_id: str) -> dict[str, str]:
    _, body = stack.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}/taskInstances")
    return {ti["task_id"]: ti["state"] for ti in body.get("task_instances", [])} if isinstance(body, dict) else {}


def _task_logs(stack: AirflowStack, dag_id: str) -> str:
    logs = sorted((stack.home / "logs").rglob(f"dag_id={dag_id}/**/*.log"))
    return "\n".join(f"--- {p} ---\n" + "\n".join(p.read_text(errors="replace").splitlines()[-30:]) for p in logs)


@pytest.fixture(scope="module")
def nightly(stack: AirflowStack, webhook: WebhookReceiver) -> SimpleNamespace:
    """Trigger the nightly DAG through the REST API and wait for it and for the consumer it schedules."""
    t0 = time.monotonic()
    nightly_dag = stack.wait_for(lambda: _dag_ready(stack, NIGHTLY), DAGS_PARSED_S, f"DAG {NIGHTLY} to be parsed")
    stack.wait_for(lambda: _dag_ready(stack, FINETUNE), DAGS_PARSED_S, f"DAG {FINETUNE} to be parsed")
    stack.timings["dags_parsed_s"] = time.monotonic() - t0

    status, body = stack.api("PATCH", f"/api/v2/dags/{FINETUNE}", {"is_paused": False})
    assert status == 200 and body["is_paused"] is False, body
    # Trigger for the slot the timetable would schedule next: the scheduler then sees that run as existing
    # and does not add a second, scheduled run of the same night once the DAG is unpaused.
    logical_date = nightly_dag.get("next_dagrun_logical_date")
    run_id = f"it__{stack.token}"
    status, body = stack.api("POST", f"/api/v2/dags/{NIGHTLY}/dagRuns",
                             {"dag_run_id": run_id, "logical_date": logical_date,
                              "conf": {"input_uri": str(SAMPLE)}})
    assert status == 200, body
    status, body = stack.api("PATCH", f"/api/v2/dags/{NIGHTLY}", {"is_paused": False})
    assert status == 200 and body["is_paused"] is False, body

    t1 = time.monotonic()
    try:
        run = stack.wait_for(lambda: _run_state(stack, NIGHTLY, run_id), NIGHTLY_DONE_S, f"{NIGHTLY} run {run_id}")
    except TimeoutError as exc:
        raise TimeoutError(f"{exc}\ntask states: {_task_states(stack, NIGHTLY, run_id)}\n"
                           f"{_task_logs(stack, NIGHTLY)}") from None
    stack.timings["nightly_run_s"] = time.monotonic() - t1
    assert run["state"] == "success", (f"{NIGHTLY} {run['state']}: {_task_states(stack, NIGHTLY, run_id)}\n"
                                       f"{_task_logs(stack, NIGHTLY)}\n{stack.tail('celery-worker')}")

    t2 = time.monotonic()

    def consumer_done() -> dict[str, Any] | None:
        _, body = stack.api("GET", f"/api/v2/dags/{FINETUNE}/dagRuns")
        done = [r for r in body.get("dag_runs", []) if r["state"] in ("success", "failed")]
        return done[0] if done else None

    try:
        consumer = stack.wait_for(consumer_done, CONSUMER_DONE_S, f"an asset-triggered {FINETUNE} run")
    except TimeoutError as exc:
        raise TimeoutError(f"{exc}\n{_task_logs(stack, FINETUNE)}") from None
    stack.timings["consumer_run_s"] = time.monotonic() - t2
    stack.timings["total_s"] = sum(stack.timings.values())
    _, runs = stack.api("GET", f"/api/v2/dags/{NIGHTLY}/dagRuns")
    print(f"\nintegration timings (s): {json.dumps({k: round(v, 1) for k, v in stack.timings.items()})}; "
          f"{NIGHTLY} runs: {[r['dag_run_id'] for r in runs['dag_runs']]}; logs: {stack.logs}")

    date = (run.get("logical_date") or run["run_after"])[:10]
    return SimpleNamespace(run_id=run_id, run=run, run_dir=stack.root / "data" / NIGHTLY / date,
                           consumer=consumer)


def test_nightly_quarantines_the_planted_records(nightly: SimpleNamespace) -> None:
    summary = json.loads((nightly.run_dir / "summary.json").read_text(encoding="utf-8"))
    assert summary["verdict"] == "quarantine"
    assert (summary["total"], summary["rejected"]) == (1014, 4)
    assert summary["reasons"]["exact_duplicate"] == 6
    assert summary["accepted"] + summary["quarantined"] + summary["rejected"] == summary["total"]
    quarantine = pq.read_table(nightly.run_dir / "quarantine.parquet")
    assert quarantine.num_rows == summary["quarantined"] >= 10
    assert all(quarantine.column("reasons").to_pylist())
    assert pq.read_metadata(nightly.run_dir / "accepted.parquet").num_rows == summary["accepted"]
    assert (nightly.run_dir / "report.html").is_file()


def test_the_night_entered_the_history_at_its_default_location(nightly: SimpleNamespace) -> None:
    summary = json.loads((nightly.run_dir / "summary.json").read_text(encoding="utf-8"))
    history = nightly.run_dir.parent / "history"
    manifest = json.loads((history / "manifest.json").read_text(encoding="utf-8"))
    assert summary["history"]["dir"] == str(history.resolve())
    assert [b["batch_id"] for b in manifest["batches"]] == [f"{NIGHTLY}/{nightly.run_dir.name}"]
    assert manifest["count"] == summary["history"]["history_records"] > 0
    # every check of the product ran, none was turned off
    assert {"exact_duplicate", "near_duplicate", "embedding_outlier", "poison_trigger",
            "poison_content"} <= set(summary["checks"])


def test_publish_emitted_the_accepted_batch_as_an_asset_event(stack: AirflowStack, nightly: SimpleNamespace) -> None:
    status, body = stack.api("GET", f"/api/v2/assets/events?source_dag_id={NIGHTLY}"
                                    f"&source_run_id={urllib.parse.quote(nightly.run_id)}")
    assert status == 200, body
    [event] = body["asset_events"]
    assert event["source_task_id"] == "publish"
    extra = event["extra"]
    assert extra["verdict"] == "quarantine"
    summary = json.loads((nightly.run_dir / "summary.json").read_text(encoding="utf-8"))
    assert extra["counts"] == {k: summary[k] for k in ("total", "accepted", "quarantined", "rejected")}
    assert extra["accepted_uri"] == (nightly.run_dir / "accepted.parquet").resolve().as_uri()
    assert extra["report_uri"] == (nightly.run_dir / "report.html").resolve().as_uri()


def test_the_consumer_dag_trained_on_the_published_batch(stack: AirflowStack, nightly: SimpleNamespace) -> None:
    consumer = nightly.consumer
    assert consumer["state"] == "success", _task_logs(stack, FINETUNE)
    assert consumer["run_type"] == "asset_triggered"
    run = urllib.parse.quote(consumer["dag_run_id"], safe="")
    status, body = stack.api("GET", f"/api/v2/dags/{FINETUNE}/dagRuns/{run}/taskInstances/batch/"
                                    "xcomEntries/return_value?deserialize=true")
    assert status == 200, body
    value = body["value"]
    batch = value if isinstance(value, dict) else json.loads(value)
    assert batch["accepted_uri"] == (nightly.run_dir / "accepted.parquet").resolve().as_uri()
    assert batch["verdict"] == "quarantine"
    assert batch["rows"] == pq.read_metadata(nightly.run_dir / "accepted.parquet").num_rows


def test_the_quarantine_alert_reached_the_webhook(webhook: WebhookReceiver, nightly: SimpleNamespace,
                                                  stack: AirflowStack) -> None:
    alerts = [r for r in webhook.requests if r.path == WEBHOOK_ENDPOINT]
    assert alerts, ("no alert reached the webhook: does dags/tunegate_nightly.py wire "
                    "tunegate.notifications.notifiers_from_env() into the gate (see docs/alerts.md)?")
    [alert] = alerts
    assert alert.headers["Authorization"] == "Bearer it-secret-token"
    p = alert.json
    summary = json.loads((nightly.run_dir / "summary.json").read_text(encoding="utf-8"))
    assert (p["event"], p["verdict"], p["dag_id"], p["task_id"]) == ("quarantine", "quarantine", NIGHTLY, "gate")
    assert p["run_id"] == nightly.run_id
    assert p["counts"] == {k: summary[k] for k in ("total", "accepted", "quarantined", "rejected")}
    assert p["top_reasons"][0] == {"reason": "exact_duplicate", "count": 6}
    # [api] base_url is set: the link is the report served by tunegate's plugin on the API server, and it opens
    assert p["report_url"] == f"{stack.api_url}/tunegate/{NIGHTLY}/{nightly.run_dir.name}/report"
    with urllib.request.urlopen(p["report_url"], timeout=30) as response:
        assert response.status == 200 and "text/html" in response.headers["Content-Type"]
        page = response.read().decode("utf-8")
    assert page == (nightly.run_dir / "report.html").read_text(encoding="utf-8")
