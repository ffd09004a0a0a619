"""What every tunegate operator shares: where its run directory is, and how core errors fail a task.

A night's files live under one *run directory* derived from the logical date, so rerunning a night
overwrites that night only::

    {TUNEGATE_DATA_ROOT}/{dag_id}/{YYYY-MM-DD}/        outputs of the gate (accepted.parquet, report.html, ...)
    {TUNEGATE_DATA_ROOT}/{dag_id}/{YYYY-MM-DD}/work/   the stages' working files (canonical table, findings)
    {TUNEGATE_DATA_ROOT}/{dag_id}/history/              the history of accepted nights (default location)

Tasks hand each other nothing but this directory (and small counts through XCom).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from airflow.sdk import BaseOperator, Context
from airflow.sdk.exceptions import AirflowFailException

from tunegate._airflow import DATA_ROOT_ENV, run_date
from tunegate.exceptions import TunegateError

WORK_DIR = "work"  # same name as tunegate.core.pipeline.WORK_DIR (not imported: that module loads fsspec)
HISTORY_DIR = "history"


def load_run_policy(policy_file: str | None, *, checks: Sequence[str] | str | None = None,
                    check_options: Mapping[str, Mapping[str, Any]] | None = None,
                    suites: Sequence[str] | str | None = None, **overrides: Any) -> Any:
    """The run's :class:`~tunegate.core.policy.GatePolicy`: the file (or the defaults), then the operator's
    overrides. ``checks`` (a list) replaces the policy's checks; ``check_options`` changes options."""
    from tunegate.core.policy import load_policy

    if isinstance(checks, str):
        checks = [checks]
    if isinstance(suites, str):
        suites = [suites]
    policy = load_policy(policy_file or None, suites=None if suites is None else list(suites), **overrides)
    if checks is not None:
        policy = policy.with_overrides(checks=list(checks))
    if check_options:
        policy = policy.with_overrides(checks={k: dict(v) for k, v in check_options.items()})
    return policy


def batch_id_for(task: BaseOperator, context: Context) -> str:
    """The night's name in the history: ``{dag_id}/{YYYY-MM-DD}`` (a rerun of the night replaces it)."""
    return f"{task.dag_id}/{run_date(context)}"


@contextmanager
def fail_on_tunegate_error() -> Iterator[None]:
    """Turn tunegate's own errors (bad input, bad configuration) into a failure that is never retried.

    Those errors carry a message that says what to change; retrying would only repeat it. Anything else
    (an ``OSError`` on a network file system, a timeout) propagates and follows the task's retry settings.
    """
    try:
        yield
    except TunegateError as exc:
        raise AirflowFailException(f"{type(exc).__name__}: {exc}") from exc


@contextmanager
def run_dir_lock(run_dir: Path) -> Iterator[None]:
    """The run directory's OS-level lock (:func:`tunegate.core.gate.output_lock`): one writer of a night at a
    time, released when its holder dies. Held by another process: the task fails at once, naming it."""
    from tunegate.core.gate import output_lock

    with fail_on_tunegate_error(), output_lock(run_dir):
        yield


class TunegateBaseOperator(BaseOperator):
    """Base of the tunegate operators. ``run_dir`` overrides the directory derived from the logical date."""

    template_fields: Sequence[str] = ("run_dir",)
    ui_color: str = "#dbe9d8"

    def __init__(self, *, run_dir: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.run_dir = run_dir

    def pre_execute(self, context: Context) -> None:
        from tunegate.core.progress import quiet_libraries

        quiet_libraries()  # progress goes to the task log at a bounded rate; library chatter does not
        super().pre_execute(context)

    def render_template_fields(self, context: Context, jinja_env: Any = None) -> None:
        """Render twice where needed: a DAG param's *value* may itself be a template, e.g. an input URI
        ``s3://bucket/batches/{{ ds }}/`` given as ``input_uri`` and used as ``{{ params.input_uri }}``."""
        super().render_template_fields(context, jinja_env)
        for name in self.template_fields:
            value = getattr(self, name, None)
            if _has_template(value):
                setattr(self, name, self.render_template(value, context, jinja_env))

    def resolve_run_dir(self, context: Context) -> Path:
        if self.run_dir:
            return Path(self.run_dir)
        root = os.environ.get(DATA_ROOT_ENV)
        if not root:
            raise AirflowFailException(
                f"{DATA_ROOT_ENV} is not set: set it to a directory every worker can read and write, "
                f"or pass run_dir= to the {type(self).__name__}")
        return Path(root) / self.dag_id / run_date(context)

    def resolve_work_dir(self, context: Context) -> Path:
        return self.resolve_run_dir(context) / WORK_DIR

    def resolve_history_dir(self, history_dir: str | None) -> str | None:
        """``None`` -> ``{TUNEGATE_DATA_ROOT}/{dag_id}/history``; ``""`` -> no history; else the path given."""
        if history_dir is None:
            root = os.environ.get(DATA_ROOT_ENV)
            return str(Path(root) / self.dag_id / HISTORY_DIR) if root else None
        return str(history_dir) or None


def _has_template(value: Any) -> bool:
    if isinstance(value, str):
        return "{{" in value or "{%" in value
    if isinstance(value, (list, tuple)):
        return any(_has_template(v) for v in value)
    return False


def check_results_digest(work_dir: Path, results: Sequence[Any]) -> dict[str, Any]:
    """A small XCom value for a list of ``CheckResult``: per check, flagged records, reasons and issues."""
    checks: dict[str, Any] = {}
    for r in results:
        s = r.summary()
        checks[s["check"]] = {
            "flagged_records": s["flagged_records"],
            "reasons": s["reasons"],
            "issues": [{"reason": i["reason"], "severity": i["severity"]} for i in s["issues"]],
        }
    return {"work_dir": str(work_dir), "checks": checks}
