"""Checks and their registry. A check is named in the CLI, the policy and the operators by its name.

The registry maps a name to ``module:Class`` so that naming a check imports nothing heavy until it
is built. Which of them run, and with which options, is the policy's ``checks`` section
(:mod:`tunegate.core.policy`); by default all of them do.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

from tunegate.core.checks.base import (
    BatchIssue,
    CanonicalBatch,
    Check,
    CheckResult,
    Finding,
    load_findings,
    load_summaries,
    save_result,
)
from tunegate.core.policy import DEFAULT_CHECKS, DEFAULT_SUITES
from tunegate.exceptions import ConfigError

log = logging.getLogger(__name__)

REGISTRY: dict[str, str] = {
    "record_size": "tunegate.core.checks.record_size:RecordSizeCheck",
    "exact_duplicate": "tunegate.core.checks.exact_duplicate:ExactDuplicateCheck",
    "gx_suite": "tunegate.core.checks.gx_suite:GxSuiteCheck",
    "near_duplicate": "tunegate.core.checks.near_duplicate:NearDuplicateCheck",
    "embedding_outlier": "tunegate.core.checks.outlier:EmbeddingOutlierCheck",
    "poison_trigger": "tunegate.core.checks.poison.trigger:TriggerPhraseCheck",
    "poison_content": "tunegate.core.checks.poison.content:InjectedContentCheck",
    "contributor_policy": "tunegate.core.checks.contributor:ContributorPolicyCheck",
    "source_diversity": "tunegate.core.checks.diversity:SourceDiversityCheck",
}


def check_class(name: str) -> type[Check]:
    """The class of a registered check (imports its module: light, heavy libraries load when it runs)."""
    target = REGISTRY.get(name)
    if target is None:
        raise ConfigError(f"unknown check {name!r}; known checks: {', '.join(sorted(REGISTRY))}")
    module, _, cls_name = target.partition(":")
    cls: type[Check] = getattr(importlib.import_module(module), cls_name)
    return cls


def build_check(name: str, **options: Any) -> Check:
    """Build a registered check; unknown names and bad options fail here, with what to change."""
    cls = check_class(name)
    try:
        check: Check = cls(**options)
    except TypeError as exc:
        raise ConfigError(f"check {name!r}: {exc}") from exc
    return check


def run_checks(work_dir: str, checks: list[Check]) -> list[CheckResult]:
    """Run each check over ``WORK/canonical.parquet`` and persist its findings under ``WORK/findings``."""
    import time

    from tunegate.core.progress import progress

    batch = CanonicalBatch(work_dir)
    results = []
    with progress(f"checks over {batch.num_rows:,} records", len(checks), "checks") as tracker:
        for check in checks:
            started = time.perf_counter()
            result = check.run(batch)
            result.check = check.key  # the configured check's key names its findings, whatever it reported
            result.metrics["wall_seconds"] = round(time.perf_counter() - started, 2)  # where a night's time went
            save_result(work_dir, result)
            results.append(result)
            tracker.update()
    if results:
        log.info("checks over %d records took %s", batch.num_rows,
                 ", ".join(f"{r.check} {r.metrics['wall_seconds']:.1f} s" for r in results))
    return results


__all__ = [
    "DEFAULT_CHECKS",
    "DEFAULT_SUITES",
    "REGISTRY",
    "BatchIssue",
    "CanonicalBatch",
    "Check",
    "CheckResult",
    "Finding",
    "build_check",
    "check_class",
    "load_findings",
    "load_summaries",
    "run_checks",
    "save_result",
]
