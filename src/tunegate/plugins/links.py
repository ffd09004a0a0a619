"""``GateOperator``'s extra link "tunegate report": the night's report as the plugin serves it.

In Airflow 3 the worker calls :meth:`TunegateReportLink.get_link` when the task finishes (succeeded, failed or
halted) and stores the URL in XCom under :attr:`xcom_key`; the API server reads it from there for the UI's button.
So the link needs no registration in a plugin, and its URL is the one of the run directory the task wrote.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperatorLink  # noqa: TID251 (an operator link is Airflow code)

from tunegate.plugins.nights import DATA_ROOT_ENV
from tunegate.plugins.urls import api_base_url, night_of, night_url

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator  # noqa: TID251
    from airflow.sdk.types import TaskInstanceKey  # noqa: TID251

#: The attribute on which ``GateOperator.execute`` leaves the run directory it resolved, for :meth:`get_link`.
RUN_DIR_ATTR = "_tunegate_run_dir"


class TunegateReportLink(BaseOperatorLink):
    """``{[api] base_url}/tunegate/{dag_id}/{date}/report`` for the run directory the task wrote; a root-relative
    ``/tunegate/...`` without ``base_url``; empty (no button) for a run directory outside
    ``{TUNEGATE_DATA_ROOT}/{dag_id}/{date}``, which the plugin does not serve."""

    @property
    def name(self) -> str:
        return "tunegate report"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        run_dir = getattr(operator, RUN_DIR_ATTR, None) or _run_dir_from(operator, ti_key)
        night = night_of(run_dir) if run_dir else None
        if night is None:
            return ""
        return night_url(api_base_url(), *night)


def _run_dir_from(operator: Any, ti_key: Any) -> Path | None:
    """The run directory from the task instance's context (the worker passes the running task instance), for a
    task that stopped before it resolved one itself."""
    context_of = getattr(ti_key, "get_template_context", None)
    resolve = getattr(operator, "resolve_run_dir", None)
    if context_of is None or resolve is None or not os.environ.get(DATA_ROOT_ENV):
        return None
    try:
        return Path(resolve(context_of()))
    except Exception:  # no date, no data root: no link rather than a failed finalization
        return None
