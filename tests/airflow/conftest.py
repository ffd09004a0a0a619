"""Airflow test setup: a throw-away AIRFLOW_HOME and SQLite metadata DB, configured before Airflow loads.

Airflow reads its configuration when ``airflow`` is first imported, so the environment is set here, at
collection time, before any test module of this package imports it. The DB is reset once per session.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
DAGS = REPO / "dags"
SAMPLES = REPO / "samples" / "nightly"

_HOME = Path(tempfile.mkdtemp(prefix="tunegate-airflow-"))
os.environ["AIRFLOW_HOME"] = str(_HOME)
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(DAGS)
# Unpaused, the consumer DAG gets queued when the nightly DAG publishes its Asset (a paused one is skipped).
os.environ["AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION"] = "False"
os.environ["TUNEGATE_DATA_ROOT"] = str(_HOME / "data")
# The DAGs read these at parse time; a developer's own settings must not leak into the tests.
for _var in ("TUNEGATE_INPUT_URI", "TUNEGATE_POLICY_FILE"):
    os.environ.pop(_var, None)


@pytest.fixture(scope="session", autouse=True)
def airflow_db() -> Iterator[Path]:
    """A fresh metadata DB for the session; the temporary AIRFLOW_HOME is removed afterwards."""
    from airflow.utils import db

    db.resetdb()
    yield _HOME
    shutil.rmtree(_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def data_root() -> Path:
    return Path(os.environ["TUNEGATE_DATA_ROOT"])


@pytest.fixture(scope="session")
def dagbag() -> Any:
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS))


def nightly_conf(**params: Any) -> dict[str, Any]:
    """Every param of ``tunegate_nightly``, explicitly: ``dag.test`` keeps an earlier run's conf in the DAG's
    params (a scheduler run starts from the defaults each time), so tests never depend on their order."""
    return {"input_uri": str(SAMPLES), "policy_file": None, "checks": None, "history_dir": None,
            "storage_conn_id": None, **params}


@pytest.fixture(scope="module")
def tokens() -> dict[str, str]:
    """JWTs Airflow's SimpleAuthManager signs: alice may edit DAGs (role USER), victor only read (VIEWER), nobody
    has no role."""
    from airflow.api_fastapi.app import create_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    manager = create_auth_manager()
    users = {"alice": "user", "victor": "viewer", "nobody": None}
    return {name: manager.generate_jwt(SimpleAuthManagerUser(username=name, role=role))
            for name, role in users.items()}


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    """The plugin's app as the API server mounts it (``url_prefix`` of the plugin's ``fastapi_apps``)."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from tunegate.plugins.plugin import TunegatePlugin

    (entry,) = TunegatePlugin().fastapi_apps
    server = FastAPI()
    server.mount(entry["url_prefix"], entry["app"])
    with TestClient(server, base_url="http://airflow.test") as c:
        yield c
