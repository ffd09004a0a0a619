"""docker/: no Docker engine runs here, so the Dockerfile and compose file are checked statically."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from tests.airflow.conftest import REPO

pytestmark = pytest.mark.airflow

DOCKER = REPO / "docker"
AIRFLOW_SERVICES = {"airflow-init", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
                    "airflow-worker", "airflow-triggerer"}


def _locked(name: str) -> str:
    match = re.search(rf"^{re.escape(name)}==(\S+)$", (REPO / "requirements" / "lock.txt").read_text(), re.M)
    assert match, name
    return match.group(1)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DOCKER / "compose.yaml").read_text(encoding="utf-8"))
    return data


def test_dockerfile_builds_on_the_locked_airflow_image_and_copies_existing_paths() -> None:
    text = (DOCKER / "Dockerfile").read_text(encoding="utf-8")
    image = re.search(r"^ARG AIRFLOW_IMAGE=apache/airflow:(\S+)-python(\S+)$", text, re.M)
    assert image, "the image must be the official apache/airflow image"
    assert image.group(1) == _locked("apache-airflow")
    assert image.group(2) == "3.11"
    assert "--constraint /opt/tunegate/constraints.txt" in text
    for line in re.findall(r"^COPY (?!--from)(?:--chown=\S+ )?(\S+) ", text, re.M):
        assert (REPO / line).exists(), line


def test_compose_has_the_production_shape(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"postgres", "redis", *AIRFLOW_SERVICES} <= set(services)
    assert services["airflow-worker"]["command"] == "celery worker"
    for name, service in services.items():
        for dep in service.get("depends_on", {}):
            assert dep in services, (name, dep)


@pytest.mark.parametrize("name", sorted(AIRFLOW_SERVICES))
def test_every_airflow_service_shares_config_and_the_data_volume(compose: dict[str, Any], name: str) -> None:
    service = compose["services"][name]
    env = service["environment"]
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert "@postgres/airflow" in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    broker = env["AIRFLOW__CELERY__BROKER_URL"]
    assert broker.startswith("redis://") and "@redis:6379" in broker
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
    data_root = env["TUNEGATE_DATA_ROOT"]
    assert f"tunegate-data:{data_root}" in service["volumes"]  # one volume all workers share
    assert env["TUNEGATE_INPUT_URI"] == "/opt/airflow/inbox"
    assert any(v.endswith(":/opt/airflow/inbox:ro") for v in service["volumes"])
    assert service["build"] == {"context": "..", "dockerfile": "docker/Dockerfile"}
    assert (DOCKER / service["build"]["context"] / service["build"]["dockerfile"]).resolve().is_file()


def test_compose_volumes_are_declared(compose: dict[str, Any]) -> None:
    declared = set(compose["volumes"])
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if not source.startswith(("$", ".", "/")):
                assert source in declared, source


def test_env_example_names_every_variable_compose_reads(compose: dict[str, Any]) -> None:
    used = set(re.findall(r"(?<!\$)\$\{(\w+)(?::?-[^}]*)?\}", (DOCKER / "compose.yaml").read_text(encoding="utf-8")))
    example = {line.split("=", 1)[0] for line in (DOCKER / ".env.example").read_text().splitlines()
               if line and not line.startswith("#")}
    assert used - {"AIRFLOW_UID", "TUNEGATE_IMAGE"} <= example
