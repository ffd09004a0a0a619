"""What the tunegate notifiers share: find the run's summary, describe the run, build the message.

A notifier is handed an Airflow context. The summary of the gated batch is looked up, in order:

1. ``context["tunegate_summary"]``: the ``GateOperator`` passes it to its ``on_quarantine`` callables;
2. ``summary_path`` (templated): a path or ``file://`` URI given explicitly;
3. the ``summary_uri`` the gate task pushed to XCom (its return value), for DAG-level callbacks;
4. ``{TUNEGATE_DATA_ROOT}/{dag_id}/{run date}/summary.json``, if it was written during this run (so a
   failure before the gate never reports the previous run's verdict).

Without any, the alert still goes out and says which task failed and why.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from airflow.sdk import BaseNotifier
from airflow.sdk.exceptions import AirflowFailException

from tunegate._airflow import DATA_ROOT_ENV, run_date
from tunegate.core.alerts import AlertLimits, AlertMessage, RunInfo, build_alert, load_summary
from tunegate.plugins.urls import api_base_url, night_of, night_url

#: Environment variable: HTTP(S) URL under which ``TUNEGATE_DATA_ROOT`` is served (report links).
REPORT_BASE_URL_ENV = "TUNEGATE_REPORT_BASE_URL"
SUMMARY_FILE = "summary.json"  # tunegate.core.gate.SUMMARY_FILE, not imported: that module loads pyarrow
#: A summary file older than the run's start by more than this is a previous run's (clock skew allowance).
_FRESHNESS_SLACK_S = 5.0


class TunegateBaseNotifier(BaseNotifier):
    """Base of the tunegate notifiers: subclasses implement ``notify`` with :meth:`build_message`.

    :param summary_path: path or ``file://`` URI of the batch's ``summary.json`` (templated); by default it
        is found from the context (see the module docstring).
    :param report_base_url: HTTP(S) URL serving ``TUNEGATE_DATA_ROOT`` (templated); default
        ``$TUNEGATE_REPORT_BASE_URL``. Without one, the report as the tunegate plugin of the API server serves it
        (``{[api] base_url}/tunegate/{dag_id}/{date}/report``, docs/serving.md) when Airflow's ``[api] base_url``
        is set and the run directory is ``{TUNEGATE_DATA_ROOT}/{dag_id}/{date}``; else a ``file://`` URI.
    :param gate_task_id: the task whose XCom holds the summary URI (DAG-level callbacks).
    :param limits: message size bounds.
    """

    template_fields: Sequence[str] = ("summary_path", "report_base_url")

    def __init__(self, *, summary_path: str | None = None, report_base_url: str | None = None,
                 gate_task_id: str = "gate", limits: AlertLimits | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.summary_path = summary_path
        self.report_base_url = report_base_url
        self.gate_task_id = gate_task_id
        self.limits = limits or AlertLimits()

    def build_message(self, context: Mapping[str, Any]) -> AlertMessage:
        """The alert for this context (summary found as described in the module docstring)."""
        summary = self.find_summary(context)
        base_url = self.report_base_url or os.environ.get(REPORT_BASE_URL_ENV) or None
        message = build_alert(summary, run_info(context), report_base_url=base_url,
                              data_root=os.environ.get(DATA_ROOT_ENV) or None, limits=self.limits)
        served = None if base_url or not summary else served_report_url(summary)
        return dataclasses.replace(message, report_url=served) if served else message

    def find_summary(self, context: Mapping[str, Any]) -> dict[str, Any] | None:
        given = context.get("tunegate_summary")
        if isinstance(given, Mapping):
            return dict(given)
        if self.summary_path:
            return self._load(self.summary_path)
        uri = self._summary_uri_from_xcom(context)
        if uri:
            summary = self._load(uri)
            if summary is not None:
                return summary
        path = derived_summary_path(context)
        if path is not None and path.is_file() and _written_during_run(path, context):
            return self._load(path)
        return None

    def _load(self, location: str | Path) -> dict[str, Any] | None:
        try:
            return load_summary(location)
        except (OSError, ValueError) as exc:  # the alert matters more than the detail: send it without
            self.log.warning("tunegate notifier: cannot read summary %s: %s", location, exc)
            return None

    def _summary_uri_from_xcom(self, context: Mapping[str, Any]) -> str | None:
        ti = context.get("ti") or context.get("task_instance")
        if ti is None or getattr(ti, "task_id", None) == self.gate_task_id:
            return None  # the gate's own callbacks: its XCom is not pushed yet (or is the previous try's)
        try:
            value = ti.xcom_pull(task_ids=self.gate_task_id)
        except Exception:  # a context without XCom access (e.g. some DAG-level callbacks)
            return None
        uri = value.get("summary_uri") if isinstance(value, Mapping) else None
        return str(uri) if uri else None


def run_info(context: Mapping[str, Any]) -> RunInfo:
    """Dag, run, task, run date, failure and log link of a context; what is missing stays ``None``."""
    ti = context.get("ti") or context.get("task_instance")
    dag = context.get("dag")
    dag_id = getattr(dag, "dag_id", None) or getattr(ti, "dag_id", None)
    run_id = context.get("run_id") or getattr(ti, "run_id", None)
    try:
        date: str | None = run_date(context)  # type: ignore[arg-type]
    except (AirflowFailException, AttributeError, KeyError):
        date = None
    exc = context.get("exception") or context.get("reason")
    try:
        log_url = str(ti.log_url) if ti is not None and getattr(ti, "task_id", None) else None
    except Exception:  # the property needs configuration a bare context may lack
        log_url = None
    return RunInfo(dag_id=dag_id, run_id=run_id, task_id=getattr(ti, "task_id", None), run_date=date,
                   error=str(exc) if exc else None, log_url=log_url)


def served_report_url(summary: Mapping[str, Any]) -> str | None:
    """The report's URL on the API server (the tunegate plugin), or ``None``: ``[api] base_url`` unset, or a run
    directory the plugin does not serve."""
    out_dir = summary.get("out_dir")
    night = night_of(str(out_dir), os.environ.get(DATA_ROOT_ENV)) if out_dir else None
    base = api_base_url() if night else None
    return night_url(base, *night) if base and night else None


def derived_summary_path(context: Mapping[str, Any]) -> Path | None:
    """``{TUNEGATE_DATA_ROOT}/{dag_id}/{run date}/summary.json``, the layout the operators write."""
    root = os.environ.get(DATA_ROOT_ENV)
    info = run_info(context)
    if not root or not info.dag_id or not info.run_date:
        return None
    return Path(root) / info.dag_id / info.run_date / SUMMARY_FILE


def _written_during_run(path: Path, context: Mapping[str, Any]) -> bool:
    started = getattr(context.get("dag_run"), "start_date", None)
    if started is None:
        return True
    return bool(path.stat().st_mtime >= started.timestamp() - _FRESHNESS_SLACK_S)
