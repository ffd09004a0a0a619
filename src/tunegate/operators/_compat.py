"""Every difference between Airflow versions that tunegate's operators and DAGs touch, in one place.

tunegate targets Airflow 3 (the Task SDK, ``airflow.sdk``). What moved between 3.x minor versions:

* ``AirflowFailException`` lives in ``airflow.sdk.exceptions`` from 3.1; 3.0 has it in ``airflow.exceptions``.
* ``retry_policy`` (decide per exception whether a failure is retried) exists from 3.3; before that
  :func:`retry_default_args` leaves it out and only the operators' own error mapping applies.
* A run may have no logical date (asset-triggered and some manual runs in Airflow 3): the run date
  then falls back to the run's ``run_after``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from airflow.sdk import Asset, BaseOperator, Context

try:
    from airflow.sdk.exceptions import AirflowFailException
except ImportError:  # Airflow 3.0
    from airflow.exceptions import AirflowFailException  # type: ignore[no-redef, attr-defined, unused-ignore]

__all__ = [
    "AirflowFailException",
    "Asset",
    "BaseOperator",
    "Context",
    "outlet_assets",
    "retry_default_args",
    "run_date",
    "set_outlet_extra",
    "triggering_events",
]


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


def triggering_events(context: Context, asset: Asset) -> list[Any]:
    """The events of ``asset`` that triggered this run (oldest first); empty for a manual run."""
    events = context.get("triggering_asset_events") or {}
    try:
        return list(events[asset])
    except KeyError:
        return []


ExceptionSpec = type[BaseException] | str  # a class, or its dotted path (imported when the DAG is parsed)


def retry_default_args(*, retries: int, retry_delay: dt.timedelta, max_retry_delay: dt.timedelta,
                       transient: tuple[ExceptionSpec, ...], permanent: tuple[ExceptionSpec, ...]
                       ) -> dict[str, Any]:
    """``default_args`` that retry transient faults only.

    With a retry policy (Airflow 3.3+), an exception in ``permanent`` fails at once, one in ``transient``
    is retried with exponential backoff, and anything else (a bug) fails at once. Without one, Airflow
    retries every failure except ``AirflowFailException``, which is what tunegate's operators raise for
    data verdicts and misconfiguration. ``AirflowFailException`` never consults the policy.
    """
    args: dict[str, Any] = {"retries": retries, "retry_delay": retry_delay, "retry_exponential_backoff": True,
                            "max_retry_delay": max_retry_delay}
    try:
        from airflow.sdk import ExceptionRetryPolicy, RetryAction, RetryRule
    except ImportError:  # Airflow < 3.3
        return args
    args["retry_policy"] = ExceptionRetryPolicy(
        rules=[
            RetryRule(exception=list(permanent), action=RetryAction.FAIL, reason="not transient: fix and rerun"),
            RetryRule(exception=list(transient), action=RetryAction.RETRY, reason="transient fault"),
        ],
        default=RetryAction.FAIL,
    )
    return args
