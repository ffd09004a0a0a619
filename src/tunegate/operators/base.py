"""What every tunegate operator shares: where its run directory is, and how core errors fail a task.

A night's files live under one *run directory* derived from the logical date, so rerunning a night
overwrites that night only::

    {TUNEGATE_DATA_ROOT}/{dag_id}/{YYYY-MM-DD}/        outputs of the gate (accepted.parquet, report.html, ...)
    {TUNEGATE_DATA_ROOT}/{dag_id}/{YYYY-MM-DD}/work/   the stages' working files (canonical table, findings)

Tasks hand each other nothing but this directory (and small counts through XCom).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tunegate.exceptions import TunegateError
from tunegate.operators._compat import AirflowFailException, BaseOperator, Context, run_date

#: Environment variable naming the directory under which every run directory is created. It must be
#: a directory that every Airflow worker can read and write (a shared volume in a Celery deployment).
DATA_ROOT_ENV = "TUNEGATE_DATA_ROOT"
WORK_DIR = "work"  # same name as tunegate.core.pipeline.WORK_DIR (not imported: that module loads fsspec)


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


class TunegateBaseOperator(BaseOperator):
    """Base of the tunegate operators. ``run_dir`` overrides the directory derived from the logical date."""

    template_fields: Sequence[str] = ("run_dir",)
    ui_color: str = "#dbe9d8"

    def __init__(self, *, run_dir: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.run_dir = run_dir

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
