"""The Airflow plugin (entry point ``airflow.plugins``: ``tunegate = tunegate.plugins.plugin:TunegatePlugin``).

Every Airflow component loads plugins (the scheduler and dag-processor for timetables and links, the workers for
macros and listeners), but only the API server reads ``fastapi_apps``. So the app is built on first access of
that attribute, not at import: loading the plugin costs the scheduler and the workers no FastAPI import.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from airflow.plugins_manager import AirflowPlugin  # noqa: TID251 (the plugin package is Airflow code)

from tunegate.plugins.urls import URL_PREFIX


@cache
def _apps() -> list[dict[str, Any]]:
    from tunegate.plugins.app import create_app

    return [{"app": create_app(), "url_prefix": URL_PREFIX, "name": "tunegate reports and review"}]


class _BuiltOnAccess:
    """A class attribute whose value (the app list) is built the first time it is read."""

    def __get__(self, instance: object, owner: type | None = None) -> list[dict[str, Any]]:
        return _apps()


class TunegatePlugin(AirflowPlugin):
    """Serves each night's report, its suite pages and its review under ``/tunegate`` on the API server.

    Reading needs the DAG's read permission, a decision its edit permission, both checked by Airflow's auth
    manager for the user of the request (docs/serving.md). The gate task's "tunegate report" link is an
    operator link of ``GateOperator`` itself (its URL is stored at run time), so nothing is registered here.
    """

    name = "tunegate"
    fastapi_apps = _BuiltOnAccess()
