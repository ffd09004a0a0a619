"""Checks and their registry. A check is named in the CLI, the policy and the operators by its name.

The registry maps a name to ``module:Class`` so that naming a check imports nothing heavy until it
is built. Which of them run, and with which options, is the policy's ``checks`` section
(:mod:`tunegate.core.policy`); by default all of them do.
"""

from __future__ import annotations

import importlib
import logging
import os
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
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

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


#: In the work directory: each check's wall time and peak memory, merged over the calls of one night (not an
#: output: reruns of a night give identical outputs, and times differ).
TIMINGS_FILE = "timings.json"


def run_checks(work_dir: str, checks: list[Check], *, workers: int | None = None) -> list[CheckResult]:
    """Run each check over ``WORK/canonical.parquet`` and persist its findings under ``WORK/findings``; each
    check's wall time and peak memory go to ``WORK/timings.json`` and to one log line.

    ``workers``: processes (:mod:`._parallel`): with 2 or more the embedding checks (one *lane*) run in a child process
    of their own while this one runs the others; ``None``: ``TUNEGATE_CHECK_WORKERS``, else side by side for a batch of
    20k-300k records on two cores or more and one after another otherwise (:func:`._parallel.check_workers`).
    The findings are the same either way."""
    import time

    from tunegate.core.checks._parallel import check_workers, run_in_order, run_side_by_side, sweep_stale_lanes
    from tunegate.core.progress import progress

    sweep_stale_lanes(work_dir)  # a killed side-by-side night's hand-over folders, whatever this night's workers
    batch = CanonicalBatch(work_dir)
    workers = min(check_workers(batch.num_rows) if workers is None else workers, len(checks))
    started_all = time.perf_counter()
    with progress(f"checks over {batch.num_rows:,} records", len(checks), "checks") as tracker:
        if workers > 1:
            results, costs = run_side_by_side(work_dir, checks, workers, tracker)
        else:
            results, costs = run_in_order(work_dir, checks, tracker)
    if costs:
        _record_timings(work_dir, costs)
        log.info("checks over %d records took %.1f s (%s): %s", batch.num_rows, time.perf_counter() - started_all,
                 "lanes in processes of their own" if workers > 1 else "one after another",
                 ", ".join(f"{name} {c['seconds']:.1f} s" + (f" (peak {c['peak_rss_mb']:,.0f} MB)"
                                                            if c["peak_rss_mb"] else "")
                           for name, c in costs.items()))
    return results


class _MemorySampler:
    """The process's resident memory, sampled every quarter second on a thread: each check's peak without
    touching the kernel's own high-water mark (which ``/usr/bin/time`` and schedulers read). Linux; elsewhere
    the peak is ``None``."""

    def __init__(self, interval: float = 0.25) -> None:
        import threading

        self._interval = interval
        self._stop = threading.Event()
        self._max = 0
        self._thread = threading.Thread(target=self._run, name="tunegate-memory", daemon=True)

    @staticmethod
    def _rss() -> int:
        try:
            with open("/proc/self/statm", encoding="ascii") as f:
                return int(f.read().split()[1]) * _PAGE
        except (OSError, ValueError, IndexError):
            return 0

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._max = max(self._max, self._rss())

    def restart(self) -> None:
        self._max = self._rss()

    def peak(self) -> float | None:
        self._max = max(self._max, self._rss())
        return round(self._max / 2**20, 1) if self._max else None

    def __enter__(self) -> _MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _record_timings(work_dir: str, costs: dict[str, dict[str, float | None]]) -> None:
    import json
    from pathlib import Path

    from tunegate.core.io import write_json_atomic

    path = Path(work_dir) / TIMINGS_FILE
    try:
        known = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, ValueError):
        known = {}
    write_json_atomic(path, {**(known if isinstance(known, dict) else {}), **costs})


__all__ = [
    "DEFAULT_CHECKS",
    "DEFAULT_SUITES",
    "REGISTRY",
    "TIMINGS_FILE",
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
