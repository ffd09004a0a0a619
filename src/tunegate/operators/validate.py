"""``ValidateOperator``: Great Expectations suites over the ingested batch."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import Context

from tunegate.operators.base import (
    TunegateBaseOperator,
    check_results_digest,
    fail_on_tunegate_error,
    load_run_policy,
    run_dir_lock,
)


class ValidateOperator(TunegateBaseOperator):
    """Validate ``WORK/canonical.parquet`` against GX suites and record their findings for the gate.

    Suites are *recipes*: a name from ``expectations/`` (``instruction_record``) or a path to a GX 1.x
    suite JSON file. Nothing of Great Expectations is imported or built until the task runs, so DAG
    files that use this operator parse in milliseconds. The operator never decides: a failed critical
    expectation is a batch issue that the gate turns into a halt through its policy.

    :param policy_file: YAML or JSON policy (templated); its ``suites`` say which suites run.
    :param suites: suite names or paths (templated); ``None`` means the policy's (by default tunegate's two).
    :param chunk_size: rows validated at a time (bounds memory).
    :param data_docs: also render GX Data Docs, published next to the report by the gate.
    :param run_dir: overrides ``{TUNEGATE_DATA_ROOT}/{dag_id}/{logical date}`` (templated).
    """

    template_fields: Sequence[str] = ("policy_file", "suites", "run_dir")

    def __init__(self, *, policy_file: str | None = None, suites: Sequence[str] | None = None,
                 chunk_size: int = 100_000, data_docs: bool = True, run_dir: str | None = None,
                 **kwargs: Any) -> None:
        super().__init__(run_dir=run_dir, **kwargs)
        self.policy_file = policy_file
        self.suites = suites
        self.chunk_size = chunk_size
        self.data_docs = data_docs

    def execute(self, context: Context) -> dict[str, Any]:
        from tunegate.core.checks import build_check, run_checks

        work = self.resolve_work_dir(context)
        with run_dir_lock(work.parent), fail_on_tunegate_error():
            policy = load_run_policy(self.policy_file, suites=self.suites)
            checks = [build_check("gx_suite", suite=s, chunk_size=self.chunk_size, data_docs=self.data_docs)
                      for s in policy.suites]
            results = run_checks(str(work), checks)
        for r in results:
            self.log.info("validate: %s flagged %d records %s, %d batch issues", r.check,
                          len({f.row for f in r.findings}), r.counts(), len(r.issues))
        return check_results_digest(work, results)
