"""Provider metadata: valid against Airflow's schema, listed by the providers manager, Airflow-free."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import resources

import pytest

from tests.airflow.conftest import REPO

pytestmark = pytest.mark.airflow


def test_provider_info_is_valid_against_airflows_schema() -> None:
    import jsonschema

    from tunegate import __version__
    from tunegate.provider import get_provider_info

    info = get_provider_info()
    schema = json.loads(resources.files("airflow").joinpath("provider_info.schema.json").read_text())
    jsonschema.validate(info, schema)
    assert info["package-name"] == "tunegate"
    assert info["versions"] == [__version__]
    modules = info["operators"][0]["python-modules"]
    assert modules == ["tunegate.operators.ingest", "tunegate.operators.validate", "tunegate.operators.scan",
                       "tunegate.operators.gate", "tunegate.operators.publish",
                       "tunegate.operators.review"]


def test_listed_modules_import() -> None:
    import importlib

    from tunegate.provider import get_provider_info

    info = get_provider_info()
    for entry in info["operators"] + info["hooks"]:
        for module in entry["python-modules"]:
            importlib.import_module(module)
    classes = info["notifications"] + [c["hook-class-name"] for c in info["connection-types"]]
    assert len(info["notifications"]) == 3
    for dotted in classes:
        module, _, cls = dotted.rpartition(".")
        assert hasattr(importlib.import_module(module), cls), dotted
    for entry in info["connection-types"]:
        module, _, cls = entry["hook-class-name"].rpartition(".")
        assert getattr(importlib.import_module(module), cls).conn_type == entry["connection-type"]


def test_providers_manager_lists_tunegate() -> None:
    from airflow.providers_manager import ProvidersManager

    from tunegate import __version__

    providers = ProvidersManager().providers
    assert providers["tunegate"].version == __version__


def test_provider_module_does_not_import_airflow() -> None:
    code = "import sys, tunegate.provider as p; p.get_provider_info(); print('airflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "False"


def test_the_plugin_is_registered_once_through_its_entry_point() -> None:
    """The API server's plugin comes from the ``airflow.plugins`` entry point only: listed in the provider info too,
    Airflow would load it a second time when providers are discovered eagerly and report the duplicate as an error."""
    import tomllib

    from tunegate.provider import get_provider_info

    assert "plugins" not in get_provider_info()
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert project["project"]["entry-points"]["airflow.plugins"] == {
        "tunegate": "tunegate.plugins.plugin:TunegatePlugin"}
