"""Fixtures for the production-shaped integration test: services check, a webhook receiver, the Airflow stack.

Without PostgreSQL and Redis on loopback the tests skip with a one-line reason, except under ``CI=true``,
where a missing service is a failure (CI runs ``tests/integration/ensure_services.sh`` first).
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType, SimpleNamespace
from typing import Any

import pytest

from tests.integration.airflow_stack import AirflowStack, services_problem

REPO = Path(__file__).resolve().parents[2]
WEBHOOK_CONN_ID = "tunegate_webhook_it"
WEBHOOK_ENDPOINT = "/hooks/tunegate"


@pytest.fixture(scope="session")
def services() -> None:
    problem = services_problem()
    if problem is None:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true but the integration services are missing: {problem}", pytrace=False)
    pytest.skip(f"{problem}; run tests/integration/ensure_services.sh")


class WebhookReceiver:
    """A loopback HTTP server that records the JSON bodies POSTed to it."""

    def __init__(self) -> None:
        self.requests: list[SimpleNamespace] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.requests.append(SimpleNamespace(path=self.path, headers=dict(self.headers),
                                                         json=json.loads(body)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def webhook() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    yield receiver
    receiver.close()


@pytest.fixture(scope="module")
def stack(services: None, webhook: WebhookReceiver, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowStack]:
    """The running stack. ``TUNEGATE_IT_DAGS_FOLDER`` points it at another DAGs folder (to try DAG edits)."""
    root = tmp_path_factory.mktemp("airflow_it")
    dags = Path(os.environ.get("TUNEGATE_IT_DAGS_FOLDER") or REPO / "dags").resolve()
    extra_env = {
        "TUNEGATE_DATA_ROOT": str(root / "data"),
        # checks side by side (off by default): on here, so that a Celery task starting the embedding checks' child
        # process is tried as a deployment that sets it runs it
        "TUNEGATE_CHECK_WORKERS": "2",
        "TUNEGATE_ALERT_WEBHOOK_CONN_ID": WEBHOOK_CONN_ID,
        f"AIRFLOW_CONN_{WEBHOOK_CONN_ID.upper()}": json.dumps({
            "conn_type": "tunegate_webhook", "host": webhook.url, "password": "it-secret-token",
            "extra": {"endpoint": WEBHOOK_ENDPOINT, "timeout": 10}}),
    }
    airflow = AirflowStack(root=root, dags_folder=dags, extra_env=extra_env)

    # Clean up on SIGTERM too (a cancelled CI job): turn it into KeyboardInterrupt, which runs finalizers.
    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    atexit.register(airflow.stop)
    try:
        airflow.start()
        yield airflow
    finally:
        try:
            airflow.stop()
        finally:
            atexit.unregister(airflow.stop)
            signal.signal(signal.SIGTERM, previous)
    assert not airflow.leftover, f"processes survived SIGKILL: {airflow.leftover}"
