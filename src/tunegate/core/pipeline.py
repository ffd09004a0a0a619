"""``scan``: the whole flow in one process (ingest -> checks -> gate), as the CLI and CI use it.

The Airflow DAG runs the same three stages as separate tasks over the same work directory.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from tunegate.core.checks import DEFAULT_CHECKS, Check, build_check, run_checks
from tunegate.core.gate import gate
from tunegate.core.ingest import ingest
from tunegate.core.policy import GatePolicy

log = logging.getLogger(__name__)

WORK_DIR = "work"
DEFAULT_SUITES: tuple[str, ...] = ("instruction_record", "instruction_quality")


#: Checks that read and write the persisted history of accepted records (see tunegate.core.history).
HISTORY_CHECKS = frozenset({"near_duplicate", "embedding_outlier"})


def build_checks(checks: list[str] | None = None, suites: list[str] | None = None, *,
                 history_dir: str | None = None) -> list[Check]:
    """The configured checks: named checks (default :data:`DEFAULT_CHECKS`) plus one GX check per suite.

    ``history_dir`` is handed to the checks that compare against the history of accepted batches.
    """
    names = DEFAULT_CHECKS if checks is None else checks
    built = [build_check(name, **({"history_dir": history_dir} if history_dir and name in HISTORY_CHECKS else {}))
             for name in names]
    built += [build_check("gx_suite", suite=s) for s in (DEFAULT_SUITES if suites is None else suites)]
    return built


def scan(inputs: list[str], out_dir: str | Path, *, fmt: str = "auto", policy: GatePolicy | None = None,
         checks: list[Check] | None = None, keep_work: bool = False, batch_size: int = 10_000,
         history_dir: str | None = None, batch_id: str | None = None) -> dict[str, Any]:
    """Run the gate over ``inputs`` and write the outputs under ``out_dir``; returns the summary.

    Checks are built before any input is read, so a misconfiguration fails before work starts. With
    ``history_dir``, the accepted records of a batch that did not halt are added to the history
    (``summary["history"]`` says what was added), so tomorrow's near-duplicate check sees them.
    """
    checks = build_checks() if checks is None else checks
    out = Path(out_dir)
    work = out / WORK_DIR
    if work.exists():
        shutil.rmtree(work)  # a rerun starts clean: stale findings of another batch must not leak in
    ingest(inputs, work, fmt=fmt, batch_size=batch_size)
    run_checks(str(work), checks)
    summary = gate(work, out, policy)
    if history_dir and summary["verdict"] != "halt":
        from tunegate.core.checks._vectors import WORK_CACHE
        from tunegate.core.gate import ACCEPTED_FILE, SUMMARY_FILE
        from tunegate.core.history import update_history
        from tunegate.core.io import write_json_atomic

        # the checks' vectors are in the work dir's cache: the history reuses them instead of re-embedding
        summary["history"] = update_history(history_dir, out / ACCEPTED_FILE, batch_id=batch_id or out.name,
                                            cache_dir=work / WORK_CACHE)
        write_json_atomic(out / SUMMARY_FILE, summary)
    if not keep_work:
        shutil.rmtree(work, ignore_errors=True)
    return summary
