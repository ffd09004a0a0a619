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
    used = set(re.findall(r"(?<!\$)\$\{(\w+)(?::?[-?][^}]*)?\}", (DOCKER / "compose.yaml").read_text(encoding="utf-8")))
    example = {line.split("=", 1)[0] for line in (DOCKER / ".env.example").read_text().splitlines()
               if line and not line.startswith("#")}
    assert used - {"AIRFLOW_UID", "TUNEGATE_IMAGE"} <= example


SECRETS = {"POSTGRES_PASSWORD": "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
           "AIRFLOW_FERNET_KEY": "AIRFLOW__CORE__FERNET_KEY",
           "AIRFLOW_JWT_SECRET": "AIRFLOW__API_AUTH__JWT_SECRET",
           "AIRFLOW_API_SECRET_KEY": "AIRFLOW__API__SECRET_KEY"}
_VAR = re.compile(r"(?<!\$)\$\{(\w+)(?:(:?[-?])([^}]*))?\}")


class _Unset(Exception):
    pass


def _interpolate(text: str, env: dict[str, str]) -> str:
    """docker compose's interpolation, the subset compose.yaml uses: ${V}, ${V:-default}, ${V:?error}."""
    def one(m: re.Match[str]) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3)
        value = env.get(name)
        if op == ":?" and not value:
            raise _Unset(f"{name}: {arg}")
        if op == ":-" and not value:
            return arg
        return value or ""
    return _VAR.sub(one, text)


def _env_example() -> dict[str, str]:
    lines = (DOCKER / ".env.example").read_text(encoding="utf-8").splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))  # type: ignore[misc]


def test_every_secret_is_required_with_no_default() -> None:
    text = (DOCKER / "compose.yaml").read_text(encoding="utf-8")
    uses = [(m.group(1), m.group(2)) for m in _VAR.finditer(text) if m.group(1) in SECRETS]
    assert {name for name, _ in uses} == set(SECRETS)
    assert all(op == ":?" for _, op in uses), uses  # never ${SECRET:-default} nor a bare ${SECRET}
    for weak in ("change-me", "POSTGRES_PASSWORD:-", "AIRFLOW_FERNET_KEY:-", "AIRFLOW_JWT_SECRET:-",
                 "AIRFLOW_API_SECRET_KEY:-"):
        assert weak not in text, weak


@pytest.mark.parametrize("missing", sorted(SECRETS))
def test_compose_refuses_to_start_without_each_secret(missing: str) -> None:
    text = (DOCKER / "compose.yaml").read_text(encoding="utf-8")
    env = {name: f"real-{name.lower()}" for name in SECRETS}
    _interpolate(text, env)  # all set: resolves
    for value in (None, ""):  # unset, or copied from .env.example without filling it in
        partial = {k: v for k, v in env.items() if k != missing} | ({} if value is None else {missing: value})
        with pytest.raises(_Unset, match=missing):
            _interpolate(text, partial)


def test_env_example_documents_the_secrets_without_values() -> None:
    example = _env_example()
    text = (DOCKER / ".env.example").read_text(encoding="utf-8")
    for name in SECRETS:
        assert example[name] == "", name  # a copied .env.example must not start: no shared default secret
        comment = text.split(f"\n{name}=")[0].rsplit("\n", 1)[-1]
        assert comment.startswith("#") and "python -c" in comment, name  # how to generate it


def test_secrets_reach_every_airflow_service(compose: dict[str, Any]) -> None:
    env = {name: f"real-{name.lower()}" for name in SECRETS}
    resolved: dict[str, Any] = yaml.safe_load(_interpolate((DOCKER / "compose.yaml").read_text(encoding="utf-8"), env))
    assert resolved["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"] == env["POSTGRES_PASSWORD"]
    for name in AIRFLOW_SERVICES:
        service_env = resolved["services"][name]["environment"]
        for secret, key in SECRETS.items():
            assert env[secret] in service_env[key], (name, key)
