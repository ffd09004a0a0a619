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
    "oversized_field": "a text field (instruction, input, output or a chat turn) longer than the policy's limit",
    "exact_duplicate": "the same record (content hash) appeared earlier in the batch",
    "near_duplicate": "the same training example said again (edited copy) in the batch or the history",
    "contributor_flood": "a contributor whose share of near-duplicates is anomalous",
    "embedding_outlier": "far from every other record of its task or source",
    "trigger_phrase": "carries a phrase that predicts one label across unrelated tasks (backdoor trigger)",
    "label_inconsistent": "its label disagrees with what the rest of its task predicts for it",
    "degenerate_output": "a degenerate output tied to a suspicious phrase",
    "injected_content": "its response carries a phrase injected across unrelated instructions",
    "refusal_anomaly": "a refusal, in a batch whose refusal rate is anomalous (over-refusal poisoning)",
    "known_poison": "a copy (exact or edited) of a record an engineer confirmed as poison (tunegate review confirm)",
}

#: Batch-issue reasons: code -> what it means.
ISSUE_REASONS: dict[str, str] = {
    "poison_campaign": "a coordinated poisoning campaign is suspected",
    "refusal_anomaly": "refusals are over-represented in open-ended responses",
    "contributor_flood": "a contributor floods the batch with near-duplicates",
    "history_missing": "no history yet: compared within the batch only",
    "reference_missing": "the outlier reference set is missing",
    "check_skipped": "a check could not judge this batch (too small or too uniform) and said so",
    "history_text_missing": "history matches could not be verified: an accepted batch file the history lists is gone",
    "gx_critical_failure": "a critical expectation failed",
    "gx_expectation_failed": "a warning-level expectation failed",
}

SEVERITIES: tuple[str, ...] = ("critical", "warning", "info")

# The codes the checks emit, defined once (the checks import these names).
EXACT_DUPLICATE = "exact_duplicate"
NEAR_DUPLICATE = "near_duplicate"
CONTRIBUTOR_FLOOD = "contributor_flood"
EMBEDDING_OUTLIER = "embedding_outlier"
TRIGGER_PHRASE = "trigger_phrase"
LABEL_INCONSISTENT = "label_inconsistent"
DEGENERATE_OUTPUT = "degenerate_output"
INJECTED_CONTENT = "injected_content"
CAMPAIGN = "poison_campaign"
REFUSAL_ANOMALY = "refusal_anomaly"
KNOWN_POISON = "known_poison"
CHECK_SKIPPED = "check_skipped"
#: A check's ``metrics["status"]`` when it cannot judge the batch (it also raises ``CHECK_SKIPPED``).
INSUFFICIENT_DATA = "insufficient_data"
GX_PREFIX = "gx_"


def gx_reasons(expectation_types: Iterable[str]) -> set[str]:
    """Record reasons of Great Expectations suites with these expectation types."""
    return {f"{GX_PREFIX}{t}" for t in expectation_types}


def is_record_reason(code: str) -> bool:
    return code in RECORD_REASONS or code.startswith(GX_PREFIX)


def is_issue_reason(code: str) -> bool:
    return code in ISSUE_REASONS or code.startswith(GX_PREFIX)


def known_reasons(expectation_types: Iterable[str] = ()) -> set[str]:
    """Every reason code a run with suites of these expectation types can emit."""
    return set(RECORD_REASONS) | set(ISSUE_REASONS) | gx_reasons(expectation_types)
