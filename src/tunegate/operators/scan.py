"""``ScanOperator``: the named checks (duplicates, poisoning scans, ...) over the ingested batch."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tunegate.operators._compat import Context
from tunegate.operators.base import TunegateBaseOperator, check_results_digest, fail_on_tunegate_error


class ScanOperator(TunegateBaseOperator):
    """Run registered checks (``tunegate.core.checks.REGISTRY``) and record their findings for the gate.

    :param checks: check names (templated); ``None`` means the defaults of ``tunegate scan``.
    :param check_options: per check name, keyword options for that check (its documented parameters).
    :param run_dir: overrides ``{TUNEGATE_DATA_ROOT}/{dag_id}/{logical date}`` (templated).
    """

    template_fields: Sequence[str] = ("checks", "check_options", "run_dir")

    def __init__(self, *, checks: Sequence[str] | None = None,
                 check_options: Mapping[str, Mapping[str, Any]] | None = None, run_dir: str | None = None,
                 **kwargs: Any) -> None:
        super().__init__(run_dir=run_dir, **kwargs)
        self.checks = checks
        self.check_options = check_options

    def execute(self, context: Context) -> dict[str, Any]:
        from tunegate.core.checks import DEFAULT_CHECKS, build_check, run_checks

        work = self.resolve_work_dir(context)
        names = DEFAULT_CHECKS if self.checks is None else self.checks
        if isinstance(names, str):
            names = [names]
        options = self.check_options or {}
        with fail_on_tunegate_error():
            checks = [build_check(name, **dict(options.get(name, {}))) for name in names]
            results = run_checks(str(work), checks)
        for r in results:
            self.log.info("scan: %s flagged %d records %s", r.check, len({f.row for f in r.findings}), r.counts())
        return check_results_digest(work, results)
