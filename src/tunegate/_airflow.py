"""The Airflow glue that operators, notifiers and DAG files share (tunegate targets Airflow 3.3 only).

* the run directory root (``TUNEGATE_DATA_ROOT``) and a run's date: the logical date, or ``run_after`` for
  runs without one (asset-triggered and some manual runs in Airflow 3);
* publishing to a task's outlet Assets;
* ``default_args`` with a retry policy that retries transient faults only.

``tunegate.core`` never imports this module (it is Airflow-free); ``tunegate.operators``,
``tunegate.notifications`` and the DAG files do, and none of them imports another's internals.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from airflow.sdk import Asset, BaseOperator, Context, ExceptionRetryPolicy, RetryAction, RetryRule
from airflow.sdk.exceptions import AirflowFailException

__all__ = [
    "DATA_ROOT_ENV",
    "outlet_assets",
    "retry_default_args",
    "run_date",
    "set_outlet_extra",
]

#: Environment variable naming the directory under which every run directory is created. It must be
#: a directory that every Airflow worker can read and write (a shared volume in a Celery deployment).
DATA_ROOT_ENV = "TUNEGATE_DATA_ROOT"


def run_date(context: Context) -> str:
    """``YYYY-MM-DD`` of the run: the logical date, or ``run_after`` for runs without one."""
    when: dt.datetime | None = context.get("logical_date")
    if when is None:
        dag_run = context.get("dag_run")
        when = getattr(dag_run, "run_after", None)
    if when is None:
        raise AirflowFailException("this run has neither a logical date nor run_after; pass run_dir explicitly")
    return when.strftime("%Y-%m-%d")


def outlet_assets(task: BaseOperator) -> list[Asset]:
    """The concrete Assets among a task's outlets (aliases and refs are not published to)."""
    return [o for o in (task.outlets or []) if isinstance(o, Asset)]


def set_outlet_extra(context: Context, asset: Asset, extra: dict[str, Any]) -> None:
    """Attach ``extra`` to the event Airflow emits for ``asset`` when the task succeeds."""
    context["outlet_events"][asset].extra = extra


ExceptionSpec = type[BaseException] | str  # a class, or its dotted path (imported when the DAG is parsed)


def retry_default_args(*, retries: int, retry_delay: dt.timedelta, max_retry_delay: dt.timedelta,
                       transient: tuple[ExceptionSpec, ...], permanent: tuple[ExceptionSpec, ...]
                       ) -> dict[str, Any]:
    """``default_args`` that retry transient faults only.

    An exception in ``permanent`` fails at once, one in ``transient`` is retried with exponential backoff,
    and anything else (a bug) fails at once. ``AirflowFailException`` (what tunegate's operators raise for
    data verdicts and misconfiguration) never consults the policy.
    """
    return {
        "retries": retries,
        "retry_delay": retry_delay,
        "retry_exponential_backoff": True,
        "max_retry_delay": max_retry_delay,
        "retry_policy": ExceptionRetryPolicy(
            rules=[
                RetryRule(exception=list(permanent), action=RetryAction.FAIL, reason="not transient: fix and rerun"),
                RetryRule(exception=list(transient), action=RetryAction.RETRY, reason="transient fault"),
            ],
            default=RetryAction.FAIL,
        ),
    }
