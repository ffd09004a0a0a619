"""Every reason code tunegate emits, in one place, so a policy that names an unknown one fails at load.

Two kinds share the namespace: *record reasons* (a :class:`~tunegate.core.checks.base.Finding` sets one
record aside) and *issue reasons* (a :class:`~tunegate.core.checks.base.BatchIssue` says something about
the whole batch). Great Expectations reasons are derived: ``gx_<expectation type>`` for every expectation
of the configured suites (record level), plus ``gx_critical_failure`` / ``gx_expectation_failed``.

Codes are short, stable snake_case strings; tests, policies and dashboards refer to them.
"""

from __future__ import annotations

from collections.abc import Iterable

#: Record reasons: code -> what it means (one line, for docs and error messages).
RECORD_REASONS: dict[str, str] = {
    "exact_duplicate": "the same record (content hash) appeared earlier in the batch",
    "near_duplicate": "the same training example said again (edited copy) in the batch or the history",
    "contributor_flood": "a contributor whose share of near-duplicates is anomalous",
    "embedding_outlier": "far from every other record of its task or source",
    "trigger_phrase": "carries a phrase that predicts one label across unrelated tasks (backdoor trigger)",
    "label_inconsistent": "its label disagrees with what the rest of its task predicts for it",
    "degenerate_output": "a degenerate output tied to a suspicious phrase",
    "injected_content": "its response carries a phrase injected across unrelated instructions",
}

#: Batch-issue reasons: code -> what it means.
ISSUE_REASONS: dict[str, str] = {
    "poison_campaign": "a coordinated poisoning campaign is suspected",
    "refusal_anomaly": "refusals are over-represented in open-ended responses",
    "contributor_flood": "a contributor floods the batch with near-duplicates",
    "history_missing": "no history yet: compared within the batch only",
    "reference_missing": "the outlier reference set is missing",
    "check_skipped": "a check could not judge this batch (too small or too uniform) and said so",
    "gx_critical_failure": "a critical expectation failed",
    "gx_expectation_failed": "a warning-level expectation failed",
}

SEVERITIES: tuple[str, ...] = ("critical", "warning", "info")
GX_PREFIX = "gx_"


def gx_reasons(expectation_types: Iterable[str]) -> set[str]:
    """Record reasons of Great Expectations suites with these expectation types."""
    return {f"{GX_PREFIX}{t}" for t in expectation_types}


def known_reasons(expectation_types: Iterable[str] = ()) -> set[str]:
    """Every reason code a run with suites of these expectation types can emit."""
    return set(RECORD_REASONS) | set(ISSUE_REASONS) | gx_reasons(expectation_types)
