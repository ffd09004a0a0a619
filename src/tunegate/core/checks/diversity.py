"""Source diversity: per task, how much of it comes from one party.

For every task (its ``task``, else its ``source``, as the other checks group) the share of its records from the
top contributor and from the top source, and the effective number of contributors (and of sources): the inverse
Simpson index ``1 / sum p_i^2`` over the named parties' shares, i.e. how many equally large parties would give the
same concentration (1.0: one party; 4.0: four of equal size). A task of at least ``min_task_records`` records whose
top contributor holds more than ``max_top_contributor_share`` of it (or whose top source holds more than
``max_top_source_share``, when set) is *dominated*: a ``task_dominated`` warning, or ``critical_task_dominated``
(critical: halts under the default policy) for a task named in ``critical_tasks``. Issues only: no record is set
aside for where it came from.

The share is of all the task's records, so records without a contributor dilute it (they are no party); the
effective number counts named contributors only. The source threshold is off by default: a task is often one
source dataset by construction. docs/provenance.md has the reasons for the defaults.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, ClassVar

from tunegate.core.checks.base import BatchIssue, CanonicalBatch, Check, CheckResult, Severity
from tunegate.core.checks.config import CheckConfig, fraction, integer, strings
from tunegate.core.reasons import CHECK_SKIPPED, CRITICAL_TASK_DOMINATED, INSUFFICIENT_DATA, TASK_DOMINATED

log = logging.getLogger(__name__)

#: Tasks kept in the metrics (least diverse first) and named in an issue.
TASKS_KEPT = 50
_NAMED = 5
NO_TASK = "(none)"


@dataclass(frozen=True)
class SourceDiversityConfig(CheckConfig):
    """``max_top_contributor_share``/``max_top_source_share``: the share of a task one party may hold (``null``:
    not judged); ``min_task_records``: smaller tasks are reported, not judged; ``critical_tasks``: tasks whose
    domination halts."""

    check: ClassVar[str] = "source_diversity"

    max_top_contributor_share: float | None = 0.8
    max_top_source_share: float | None = None
    min_task_records: int = 50
    critical_tasks: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("max_top_contributor_share", "max_top_source_share"):
            if getattr(self, name) is not None:
                fraction(self, name)
        integer(self, "min_task_records", minimum=1)
        strings(self, "critical_tasks")


def effective_number(counts: Counter[str]) -> float:
    """Inverse Simpson index of the counts' shares (0.0 for none)."""
    total = sum(counts.values())
    return 1.0 / sum((n / total) ** 2 for n in counts.values()) if total else 0.0


def task_diversity(task: str, contributors: Counter[str], sources: Counter[str], unknown: str) -> dict[str, Any]:
    """One task's row: top contributor and source, their shares, the effective numbers."""
    n = sum(contributors.values())
    named = Counter({k: v for k, v in contributors.items() if k != unknown})
    named_sources = Counter({k: v for k, v in sources.items() if k != unknown})
    top_c = min(named.items(), key=lambda kv: (-kv[1], kv[0])) if named else None
    top_s = min(named_sources.items(), key=lambda kv: (-kv[1], kv[0])) if named_sources else None
    return {"task": task, "records": n,
            "top_contributor": top_c[0] if top_c else None,
            "top_contributor_share": round(top_c[1] / n, 4) if top_c else None,
            "effective_contributors": round(effective_number(named), 2), "contributors": len(named),
            "top_source": top_s[0] if top_s else None,
            "top_source_share": round(top_s[1] / n, 4) if top_s else None,
            "effective_sources": round(effective_number(named_sources), 2)}


class SourceDiversityCheck(Check):
    """Per-task concentration of contributors and sources; a dominated task is a batch issue (see the module)."""

    name = "source_diversity"
    config_class: ClassVar[type[CheckConfig]] = SourceDiversityConfig
    config: SourceDiversityConfig

    def run(self, batch: CanonicalBatch) -> CheckResult:
        from tunegate.core.ledger.store import UNKNOWN, name_of

        cfg = self.config
        started = time.monotonic()
        cols: list[str] = [c for c in ("task", "source", "contributor") if c in batch.columns]
        data = batch.read_columns(cols).to_pydict()
        n = batch.num_rows
        tasks, sources, contributors = (data.get(c, [None] * n) for c in ("task", "source", "contributor"))
        by_contributor: dict[str, Counter[str]] = {}
        by_source: dict[str, Counter[str]] = {}
        for task, source, contributor in zip(tasks, sources, contributors, strict=True):
            group = task or source or NO_TASK
            by_contributor.setdefault(group, Counter())[name_of(contributor)] += 1
            by_source.setdefault(group, Counter())[name_of(source)] += 1
        rows = [task_diversity(t, by_contributor[t], by_source[t], UNKNOWN) for t in sorted(by_contributor)]
        judged = [r for r in rows if r["records"] >= cfg.min_task_records]
        named = any(r["contributors"] for r in rows)
        overall = Counter(name_of(c) for c in contributors)
        overall.pop(UNKNOWN, None)
        metrics: dict[str, Any] = {
            "records": n, "tasks": len(rows), "tasks_judged": len(judged),
            "effective_contributors": round(effective_number(overall), 2),
            "max_top_contributor_share": cfg.max_top_contributor_share,
            "max_top_source_share": cfg.max_top_source_share, "min_task_records": cfg.min_task_records,
        }
        if not named and cfg.max_top_source_share is None:
            reason = "no record names a contributor: contributor diversity not judged (source shares are reported)"
            metrics.update({"status": INSUFFICIENT_DATA, "status_reason": reason, "dominated": [],
                            "task_table": sorted(rows, key=_least_diverse)[:TASKS_KEPT]})
            return CheckResult(self.name, [], [BatchIssue(CHECK_SKIPPED, "info", reason)], metrics)
        dominated = [(r, why) for r in judged if (why := self._why(r))]
        issues: list[BatchIssue] = []
        critical = [(r, why) for r, why in dominated if r["task"] in cfg.critical_tasks]
        ordinary = [(r, why) for r, why in dominated if r["task"] not in cfg.critical_tasks]
        levels: tuple[tuple[str, Severity, list[tuple[dict[str, Any], str]]], ...] = (
            (CRITICAL_TASK_DOMINATED, "critical", critical), (TASK_DOMINATED, "warning", ordinary))
        for reason, severity, items in levels:
            if items:
                named_tasks = "; ".join(f"{r['task']}: {why}" for r, why in items[:_NAMED])
                more = f"; and {len(items) - _NAMED} more" if len(items) > _NAMED else ""
                issues.append(BatchIssue(reason, severity, f"{len(items)} task(s) dominated by one party: "
                                                           f"{named_tasks}{more}"))
        metrics.update({"status": "ok", "status_reason": f"{len(judged)} of {len(rows)} task(s) have >= "
                                                         f"{cfg.min_task_records} records and were judged",
                        "dominated": [{"task": r["task"], "why": why, "critical": r["task"] in cfg.critical_tasks}
                                      for r, why in dominated[:TASKS_KEPT]],
                        "task_table": sorted(rows, key=_least_diverse)[:TASKS_KEPT],
                        "seconds": round(time.monotonic() - started, 3)})
        log.info("source_diversity: %d task(s), %d judged, %d dominated (%d critical); effective contributors %.1f",
                 len(rows), len(judged), len(dominated), len(critical), metrics["effective_contributors"])
        return CheckResult(self.name, [], issues, metrics)

    def _why(self, row: dict[str, Any]) -> str:
        cfg = self.config
        parts = []
        share = row["top_contributor_share"]
        if cfg.max_top_contributor_share is not None and share is not None and share > cfg.max_top_contributor_share:
            parts.append(f"{share:.0%} of {row['records']} records from contributor {row['top_contributor']!r} "
                         f"(effective contributors {row['effective_contributors']:.1f})")
        share = row["top_source_share"]
        if cfg.max_top_source_share is not None and share is not None and share > cfg.max_top_source_share:
            parts.append(f"{share:.0%} from source {row['top_source']!r}")
        return ", ".join(parts)


def _least_diverse(row: dict[str, Any]) -> tuple[float, float, str]:
    return (-(row["top_contributor_share"] or 0.0), -(row["top_source_share"] or 0.0), row["task"])
