"""The notifiers against real local servers: an HTTP server on loopback (Slack-shaped and generic webhooks)
and an aiosmtpd SMTP server. Connections come from ``AIRFLOW_CONN_*`` environment variables, as in a
deployment; the payloads are asserted as the servers received them.

The summaries are real: the bundled sample batch gated with the exact-duplicate check (quarantine), and the
same findings under a strict policy (halt), laid out as the operators lay out a run directory.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests.conftest import NIGHTLY

pytestmark = pytest.mark.airflow

DAG_ID = "tunegate_alerts_test"
NIGHT = datetime(2026, 1, 1, tzinfo=UTC)
HALT_NIGHT = datetime(2026, 1, 2, tzinfo=UTC)
SLACK_TOKEN = "T0000/B0000/XXXXXXXXXXXXXXXX"
WEBHOOK_TOKEN = "tg-webhook-secret-token"


# -- real servers ------------------------------------------------------------------------------------


class HttpSink:
    """A loopback HTTP server recording every POST; answers from ``statuses`` (then 200 "ok")."""

    def __init__(self) -> None:
        self.requests: list[SimpleNamespace] = []
        self.statuses: list[int] = []
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                sink.requests.append(SimpleNamespace(path=self.path, headers=dict(self.headers),
                                                     json=json.loads(body)))
                status = sink.statuses.pop(0) if sink.statuses else 200
                reply = b"ok" if status == 200 else b"error"
                self.send_response(status)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class SmtpSink:
    """An aiosmtpd server on loopback keeping every message it receives."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.messages: list[SimpleNamespace] = []
        sink = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                sink.messages.append(SimpleNamespace(mail_from=envelope.mail_from, rcpt_tos=list(envelope.rcpt_tos),
                                                     message=message_from_bytes(envelope.content,
                                                                                policy=policy.default)))
                return "250 Message accepted for delivery"

        self.port = free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def close(self) -> None:
        self.controller.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def http_sink() -> Iterator[HttpSink]:
    sink = HttpSink()
    yield sink
    sink.close()


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    sink = SmtpSink()
    yield sink
    sink.close()


@pytest.fixture
def connections(monkeypatch: pytest.MonkeyPatch, http_sink: HttpSink) -> HttpSink:
    """The tunegate webhook and Slack connections, pointing at the loopback server."""
    monkeypatch.setenv("AIRFLOW_CONN_TUNEGATE_WEBHOOK_DEFAULT", json.dumps({
        "conn_type": "tunegate_webhook", "host": http_sink.url, "password": WEBHOOK_TOKEN,
        "extra": {"endpoint": "/hooks/tunegate", "headers": {"X-Team": "data-platform"}, "timeout": 5}}))
    monkeypatch.setenv("AIRFLOW_CONN_TUNEGATE_SLACK_DEFAULT", json.dumps({
        "conn_type": "slackwebhook", "host": f"{http_sink.url}/services", "password": SLACK_TOKEN}))
    return http_sink


# -- real summaries ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run_dirs(data_root: Path) -> SimpleNamespace:
    """Run directories ``{data_root}/tunegate_alerts_test/{night}`` with the work files the gate reads."""
    from tunegate.core.checks import build_check
    from tunegate.core.gate import gate
    from tunegate.core.pipeline import scan
    from tunegate.core.policy import GatePolicy

    quarantine = data_root / DAG_ID / NIGHT.strftime("%Y-%m-%d")
    halt = data_root / DAG_ID / HALT_NIGHT.strftime("%Y-%m-%d")
    summary = scan([str(NIGHTLY)], quarantine, checks=[build_check("exact_duplicate")], keep_work=True)
    shutil.copytree(quarantine / "work", halt / "work")
    halted = gate(halt / "work", halt, GatePolicy(max_quarantined_fraction=0.0))
    assert (summary["verdict"], halted["verdict"]) == ("quarantine", "halt")
    return SimpleNamespace(quarantine=quarantine, halt=halt, summary=summary, halted=halted)


def context(*, night: datetime = NIGHT, task_id: str = "gate", started: datetime | None = None,
            **extra: Any) -> dict[str, Any]:
    """The part of an Airflow task context the notifiers read (the DAG renders their templates)."""
    from airflow.sdk import DAG

    run_id = f"scheduled__{night.isoformat()}"
    return {"dag": DAG(DAG_ID, schedule=None), "run_id": run_id, "logical_date": night,
            "ti": SimpleNamespace(dag_id=DAG_ID, task_id=task_id, run_id=run_id),
            "dag_run": SimpleNamespace(start_date=started), **extra}


# -- generic webhook ---------------------------------------------------------------------------------


def test_webhook_delivers_the_quarantine_alert(connections: HttpSink, run_dirs: SimpleNamespace) -> None:
    from tunegate.notifications import TunegateWebhookNotifier

    TunegateWebhookNotifier()(context(tunegate_summary=run_dirs.summary))

    [request] = connections.requests
    assert request.path == "/hooks/tunegate"
    assert request.headers["Authorization"] == f"Bearer {WEBHOOK_TOKEN}"
    assert request.headers["X-Team"] == "data-platform"
    assert request.headers["Content-Type"] == "application/json"
    p = request.json
    assert (p["source"], p["event"], p["verdict"]) == ("tunegate", "quarantine", "quarantine")
    assert p["counts"] == {"total": 1014, "accepted": 1004, "quarantined": 6, "rejected": 4}
    assert p["top_reasons"] == [{"reason": "exact_duplicate", "count": 6}]
    assert p["report_url"] == (run_dirs.quarantine / "report.html").resolve().as_uri()
    assert (p["dag_id"], p["task_id"], p["run_date"]) == (DAG_ID, "gate", "2026-01-01")
    assert p["text"].startswith("tunegate QUARANTINE · tunegate_alerts_test 2026-01-01: 6 of 1014")


def test_webhook_as_failure_callback_finds_the_halt_summary_of_the_run(
        connections: HttpSink, run_dirs: SimpleNamespace) -> None:
    from tunegate.notifications import TunegateWebhookNotifier

    written = datetime.fromtimestamp((run_dirs.halt / "summary.json").stat().st_mtime, tz=UTC)
    TunegateWebhookNotifier()(context(night=HALT_NIGHT, started=written - timedelta(minutes=1),
                                      exception="tunegate verdict HALT: 1014 records"))
    p = connections.requests[-1].json
    assert (p["event"], p["verdict"]) == ("halt", "halt")
    assert p["counts"]["quarantined"] == 6
    assert any("max_quarantined_fraction" in r for r in p["halt_reasons"])
    assert p["report_url"].endswith("/tunegate_alerts_test/2026-01-02/report.html")


def test_a_summary_older_than_the_run_is_not_reported(connections: HttpSink, run_dirs: SimpleNamespace) -> None:
    """A task failing before the gate must not resend the previous run's verdict for that night."""
    from tunegate.notifications import TunegateWebhookNotifier

    TunegateWebhookNotifier()(context(night=HALT_NIGHT, task_id="ingest", started=datetime.now(tz=UTC)
                                      + timedelta(hours=1), exception="OSError: input share unreachable"))
    p = connections.requests[-1].json
    assert (p["event"], p["verdict"], p["counts"]) == ("failure", None, None)
    assert p["error"] == "OSError: input share unreachable"
    assert p["title"] == "tunegate FAILURE · tunegate_alerts_test 2026-01-02: task ingest failed"


def test_templated_summary_path_and_report_base_url(connections: HttpSink, run_dirs: SimpleNamespace,
                                                    data_root: Path) -> None:
    from tunegate.notifications import TunegateWebhookNotifier

    notifier = TunegateWebhookNotifier(
        summary_path=str(data_root / DAG_ID / "{{ ds }}" / "summary.json"),
        report_base_url="https://reports.example.com/tunegate")
    notifier(context(ds="2026-01-01"))
    p = connections.requests[-1].json
    assert p["verdict"] == "quarantine"
    assert p["report_url"] == "https://reports.example.com/tunegate/tunegate_alerts_test/2026-01-01/report.html"


def test_webhook_retries_transient_errors_only(connections: HttpSink, run_dirs: SimpleNamespace) -> None:
    from tunegate.notifications import TunegateWebhookNotifier, WebhookDeliveryError

    notifier = TunegateWebhookNotifier()
    notifier.hook.backoff_s = 0.05
    connections.statuses = [503]
    notifier(context(tunegate_summary=run_dirs.summary))
    assert len(connections.requests) == 2 and connections.requests[-1].json["verdict"] == "quarantine"

    connections.statuses = [400]
    notifier = TunegateWebhookNotifier()
    with pytest.raises(WebhookDeliveryError, match="HTTP 400"):
        notifier(context(tunegate_summary=run_dirs.summary))
    assert len(connections.requests) == 3  # a client error is not retried

    connections.statuses = [503, 502, 503]
    notifier = TunegateWebhookNotifier(retries=2)
    notifier.hook.backoff_s = 0.01
    with pytest.raises(WebhookDeliveryError, match="HTTP 503"):
        notifier(context(tunegate_summary=run_dirs.summary))
    assert len(connections.requests) == 6  # one try and two retries, then it gives up


def test_webhook_unreachable_endpoint_is_retried_then_fails(monkeypatch: pytest.MonkeyPatch,
                                                           run_dirs: SimpleNamespace) -> None:
    from tunegate.notifications import TunegateWebhookNotifier, WebhookDeliveryError

    monkeypatch.setenv("AIRFLOW_CONN_TG_CLOSED", json.dumps({
        "conn_type": "tunegate_webhook", "host": f"http://127.0.0.1:{free_port()}", "extra": {"timeout": 2}}))
    notifier = TunegateWebhookNotifier(webhook_conn_id="tg_closed", retries=1)
    notifier.hook.backoff_s = 0.01
    attempts: list[Any] = []
    real_headers = notifier.hook.headers
    monkeypatch.setattr(notifier.hook, "headers", lambda: attempts.append(1) or real_headers())
    with pytest.raises(WebhookDeliveryError, match=r"webhook 127\.0\.0\.1:\d+ unreachable"):
        notifier(context(tunegate_summary=run_dirs.summary))
    assert len(attempts) == 2


def test_webhook_connection_misconfiguration_says_what_to_change(monkeypatch: pytest.MonkeyPatch) -> None:
    from tunegate.notifications import TunegateWebhookHook

    # In a URI, the path lands in `schema`: the hook refuses to invent a URL from it.
    monkeypatch.setenv("AIRFLOW_CONN_TG_URI", "http://127.0.0.1:9/hooks")
    with pytest.raises(ValueError, match=r"put the path in extra\.endpoint"):
        TunegateWebhookHook("tg_uri").url()


# -- Slack incoming webhook ------------------------------------------------------------------------


def test_slack_message_through_the_slack_provider_hook(connections: HttpSink, run_dirs: SimpleNamespace,
                                                       monkeypatch: pytest.MonkeyPatch, data_root: Path) -> None:
    from tunegate.notifications import TunegateSlackNotifier

    monkeypatch.setenv("TUNEGATE_REPORT_BASE_URL", "https://reports.example.com")
    TunegateSlackNotifier()(context(tunegate_summary=run_dirs.summary))

    [request] = connections.requests
    assert request.path == f"/services/{SLACK_TOKEN}"
    body = request.json
    assert body["text"].startswith("tunegate QUARANTINE · tunegate_alerts_test 2026-01-01: 6 of 1014 records")
    blocks = body["blocks"]
    assert blocks[0] == {"type": "header", "text": {"type": "plain_text", "emoji": False,
                                                     "text": body["text"].splitlines()[0]}}
    sections = "\n".join(b["text"]["text"] for b in blocks if b["type"] == "section")
    assert "total 1014, accepted 1004, quarantined 6, rejected 4" in sections
    assert "`exact_duplicate`: 6" in sections
    assert blocks[-1]["elements"][0]["text"] == (
        "Report: <https://reports.example.com/tunegate_alerts_test/2026-01-01/report.html|open the report>")


# -- email (SMTP) ----------------------------------------------------------------------------------


def test_email_through_the_smtp_provider_hook(smtp_sink: SmtpSink, run_dirs: SimpleNamespace,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from tunegate.notifications import TunegateEmailNotifier

    monkeypatch.setenv("AIRFLOW_CONN_SMTP_DEFAULT", json.dumps({
        "conn_type": "smtp", "host": "127.0.0.1", "port": smtp_sink.port,
        "extra": {"from_email": "tunegate@example.com", "disable_tls": True, "disable_ssl": True,
                  "retry_limit": 0, "timeout": 10}}))
    TunegateEmailNotifier(to="oncall@example.com; ml-data@example.com")(
        context(night=HALT_NIGHT, started=datetime(2026, 1, 1, tzinfo=UTC),
                exception="tunegate verdict HALT: 1014 records"))

    [mail] = smtp_sink.messages
    assert mail.mail_from == "tunegate@example.com"
    assert mail.rcpt_tos == ["oncall@example.com", "ml-data@example.com"]
    msg = mail.message
    assert msg["Subject"] == "tunegate HALT · tunegate_alerts_test 2026-01-02: batch halted, nothing published " \
                             "(1014 records)"
    assert msg["X-Tunegate-Event"] == "halt"
    html = msg.get_body(("html",)).get_content()
    assert "<th align='left'>quarantined</th><td>6</td>" in html
    assert "max_quarantined_fraction" in html
    assert "<code>exact_duplicate</code>: 6" in html
    report = (run_dirs.halt / "report.html").resolve().as_uri()
    assert f'<a href="{report}">' in html


# -- wiring ----------------------------------------------------------------------------------------


def test_notifiers_from_env() -> None:
    from tunegate.notifications import (
        TunegateEmailNotifier,
        TunegateSlackNotifier,
        TunegateWebhookNotifier,
        notifiers_from_env,
    )

    assert notifiers_from_env({}) == []
    webhook, slack, email = notifiers_from_env({"TUNEGATE_ALERT_WEBHOOK_CONN_ID": "hooks",
                                                "TUNEGATE_ALERT_SLACK_CONN_ID": "slack_alerts",
                                                "TUNEGATE_ALERT_EMAIL_TO": "a@example.com,b@example.com"})
    assert isinstance(webhook, TunegateWebhookNotifier) and webhook.webhook_conn_id == "hooks"
    assert isinstance(slack, TunegateSlackNotifier) and slack.slack_webhook_conn_id == "slack_alerts"
    assert isinstance(email, TunegateEmailNotifier) and email.smtp_conn_id == "smtp_default"
    assert email.to == "a@example.com,b@example.com"


def test_notifiers_do_not_import_the_operators() -> None:
    """The shared Airflow glue lives in tunegate._airflow: notifiers need nothing of the operators package."""
    import subprocess
    import sys

    from tests.airflow.conftest import REPO

    code = "import sys, tunegate.notifications; print(sorted(m for m in sys.modules if m.startswith('tunegate.')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    loaded = out.stdout.strip()
    assert "tunegate._airflow" in loaded and "tunegate.operators" not in loaded


def _register(dag: Any, tmp_path: Path) -> None:
    """Serialize a DAG defined in a test into the metadata DB (``dag.test()`` looks it up there)."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db

    DagBundlesManager().sync_bundles_to_db()
    bag = DagBag(dag_folder=str(tmp_path))
    bag.bag_dag(dag)
    sync_bag_to_db(bag, "dags-folder", None)


def test_gate_task_fires_the_notifier_on_quarantine_and_on_halt(connections: HttpSink, run_dirs: SimpleNamespace,
                                                                tmp_path: Path) -> None:
    """In a real task run (``dag.test()``): ``on_quarantine`` gets the summary, ``on_failure_callback`` on a
    halt finds it in the run directory."""
    from airflow.sdk import DAG, Param

    from tunegate.notifications import TunegateWebhookNotifier
    from tunegate.operators import GateOperator

    alerts = [TunegateWebhookNotifier()]
    with DAG(DAG_ID, schedule=None, start_date=NIGHT, catchup=False, render_template_as_native_obj=True,
             params={"max_quarantined_fraction": Param(0.25, type="number")}) as dag:
        GateOperator(task_id="gate", on_quarantine=alerts, on_failure_callback=alerts,
                     policy_overrides={"max_quarantined_fraction": "{{ params.max_quarantined_fraction }}"})
    _register(dag, tmp_path)

    assert str(dag.test(logical_date=NIGHT).state) == "success"
    p = connections.requests[-1].json
    assert (p["event"], p["run_date"], p["task_id"]) == ("quarantine", "2026-01-01", "gate")
    assert p["counts"]["quarantined"] == 6

    run = dag.test(logical_date=HALT_NIGHT, run_conf={"max_quarantined_fraction": 0.0})
    assert str(run.state) == "failed"
    p = connections.requests[-1].json
    assert (p["event"], p["run_date"]) == ("halt", "2026-01-02")
    assert any("max_quarantined_fraction" in r for r in p["halt_reasons"])
    assert len(connections.requests) == 2
    assert os.environ["TUNEGATE_DATA_ROOT"] in p["report_url"]
