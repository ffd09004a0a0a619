"""``ScanOperator``: the policy's checks (duplicates, outliers, poisoning scans) over the ingested batch."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from airflow.sdk import Context

from tunegate.operators.base import (
    TunegateBaseOperator,
    batch_id_for,
    check_results_digest,
    fail_on_tunegate_error,
    load_run_policy,
    run_dir_lock,
)


class ScanOperator(TunegateBaseOperator):
    """Run the checks the policy turns on (by default all of ``tunegate.core.policy.DEFAULT_CHECKS``) and
    record their findings for the gate. Great Expectations suites run in :class:`ValidateOperator`.

    :param policy_file: YAML or JSON policy (templated); its ``checks`` section says which checks run and
        with which options. Empty means the defaults.
    :param checks: run exactly these checks instead of the policy's (templated; a list, or ``None``).
    :param check_options: per check name, options that override the policy's (templated mapping).
    :param history_dir: the history of accepted batches (templated); ``None`` means
        ``{TUNEGATE_DATA_ROOT}/{dag_id}/history``, ``""`` means no history.
    :param run_dir: overrides ``{TUNEGATE_DATA_ROOT}/{dag_id}/{logical date}`` (templated).
    """

    template_fields: Sequence[str] = ("policy_file", "checks", "check_options", "history_dir", "run_dir")

    def __init__(self, *, policy_file: str | None = None, checks: Sequence[str] | None = None,
                 check_options: Mapping[str, Mapping[str, Any]] | None = None, history_dir: str | None = None,
                 run_dir: str | None = None, **kwargs: Any) -> None:
        super().__init__(run_dir=run_dir, **kwargs)
        self.policy_file = policy_file
        self.checks = checks
        self.check_options = check_options
        self.history_dir = history_dir

    def execute(self, context: Context) -> dict[str, Any]:
        from tunegate.core.checks import run_checks
        from tunegate.core.pipeline import build_checks

        work = self.resolve_work_dir(context)
        history = self.resolve_history_dir(self.history_dir)
        with run_dir_lock(work.parent), fail_on_tunegate_error():
            policy = load_run_policy(self.policy_file, checks=self.checks, check_options=self.check_options)
            checks = build_checks(policy, history_dir=history, batch_id=batch_id_for(self, context), gx=False)
            results = run_checks(str(work), checks)
        self.log.info("scan: checks %s (off: %s); history %s", [c.key for c in checks],
                      policy.disabled_checks() or "none", history or "none")
        for r in results:
            self.log.info("scan: %s flagged %d records %s", r.check, len({f.row for f in r.findings}), r.counts())
        return check_results_digest(work, results)
