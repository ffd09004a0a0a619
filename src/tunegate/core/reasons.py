"""Every reason code tunegate emits, in one place, so a policy that names an unknown one fails at load.

Two kinds share the namespace: *record reasons* (a :class:`~tunegate.core.checks.base.Finding` sets one
record aside) and *issue reasons* (a :class:`~tunegate.core.checks.base.BatchIssue` says something about
the whole batch). Each code has one default severity (:class:`ReasonCode`); docs/reasons.md lists them all
and a test keeps it in step with this module and the shipped suites.

Great Expectations record reasons come from the suites: an expectation's ``meta.reason`` (``gx_mojibake``),
or ``gx_<expectation type>`` for one without (user suites written before codes existed). Several
expectations may share a code on purpose (``gx_template_leftover`` on three columns). A policy may also name
the *legacy alias* ``gx_<expectation type>``: it matches every expectation of that type, whatever its code,
so policies written before the specific codes keep their meaning (:func:`gx_aliases`).

Codes are short, stable snake_case strings; tests, policies and dashboards refer to them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

SEVERITIES: tuple[str, ...] = ("critical", "warning", "info")

Kind = Literal["record", "issue"]


@dataclass(frozen=True)
class ReasonCode:
    """One reason code and its default severity.

    For an issue reason the severity is the one its check raises it with (with the default policy,
    ``critical`` halts, ``warning`` alerts, ``info`` is only reported). For a record reason it says what the
    finding means: ``critical`` is evidence of poisoning, ``warning`` a quality or redundancy problem. Every
    record reason quarantines under the default policy whatever its severity; a GX code carries the severity
    of its expectation (whether the expectation's batch-level failure halts or alerts).
    """

    code: str
    kind: Kind
    severity: str
    meaning: str


RECORD_CODES: tuple[ReasonCode, ...] = (
    ReasonCode("oversized_field", "record", "warning",
               "a text field (instruction, input, output or a chat turn) longer than the policy's limit"),
    ReasonCode("exact_duplicate", "record", "warning", "the same record (content hash) appeared earlier in the batch"),
    ReasonCode("near_duplicate", "record", "warning",
               "the same training example said again (edited copy) in the batch or the history"),
    ReasonCode("contributor_flood", "record", "warning", "a contributor whose share of near-duplicates is anomalous"),
    ReasonCode("embedding_outlier", "record", "warning", "far from every other record of its task or source"),
    ReasonCode("trigger_phrase", "record", "critical",
               "carries a phrase that predicts one label across unrelated tasks (backdoor trigger)"),
    ReasonCode("label_inconsistent", "record", "critical",
               "its label disagrees with what the rest of its task predicts for it"),
    ReasonCode("degenerate_output", "record", "critical", "a degenerate output tied to a suspicious phrase"),
    ReasonCode("injected_content", "record", "critical",
               "its response carries a phrase injected across unrelated instructions"),
    ReasonCode("refusal_anomaly", "record", "critical",
               "a refusal, in a batch whose refusal rate is anomalous (over-refusal poisoning)"),
    ReasonCode("known_poison", "record", "critical",
               "a copy (exact or edited) of a record an engineer confirmed as poison (tunegate review confirm)"),
    ReasonCode("contributor_blocked", "record", "warning", "from a contributor on the policy's blocklist"),
    ReasonCode("contributor_new_volume", "record", "warning",
               "beyond the volume cap of a contributor seen for the first time tonight"),
    ReasonCode("contributor_campaign", "record", "critical",
               "from a contributor a poison campaign of the night concentrates on beyond chance"),
)

ISSUE_CODES: tuple[ReasonCode, ...] = (
    ReasonCode("poison_campaign", "issue", "warning", "a coordinated poisoning campaign is suspected"),
    ReasonCode("refusal_anomaly", "issue", "warning", "refusals are over-represented in open-ended responses"),
    ReasonCode("contributor_flood", "issue", "warning", "a contributor floods the batch with near-duplicates"),
    ReasonCode("contributor_campaign", "issue", "warning",
               "a poison campaign concentrates on one contributor beyond chance: their other records are held"),
    ReasonCode("contributor_new_volume", "issue", "warning",
               "a contributor seen for the first time floods the night beyond the new-contributor cap"),
    ReasonCode("contributor_blocked", "issue", "info", "records from blocklisted contributors were set aside"),
    ReasonCode("task_dominated", "issue", "warning", "a task's records come mostly from one contributor (or source)"),
    ReasonCode("critical_task_dominated", "issue", "critical",
               "a task the policy marks critical comes mostly from one contributor (or source)"),
    ReasonCode("history_missing", "issue", "info", "no history yet: compared within the batch only"),
    ReasonCode("reference_missing", "issue", "info", "the outlier reference set is missing"),
    ReasonCode("check_skipped", "issue", "info",
               "a check could not judge this batch (too small or too uniform) and said so"),
    ReasonCode("history_text_missing", "issue", "warning",
               "history matches could not be verified: an accepted batch file the history lists is gone"),
    ReasonCode("gx_critical_failure", "issue", "critical",
               "a critical expectation failed (the message names its reason code, e.g. gx_empty_output)"),
    ReasonCode("gx_expectation_failed", "issue", "warning",
               "a warning-level expectation failed (the message names its reason code, e.g. gx_mojibake)"),
    ReasonCode("canary_flip", "issue", "warning",
               "a phrase still steers a canary model trained on the accepted records (poison got through)"),
)

#: Record reasons: code -> what it means (one line, for docs and error messages).
RECORD_REASONS: dict[str, str] = {r.code: r.meaning for r in RECORD_CODES}
#: Batch-issue reasons: code -> what it means.
ISSUE_REASONS: dict[str, str] = {r.code: r.meaning for r in ISSUE_CODES}
#: Default severity of each record reason and of each issue reason (a code may be both, e.g. refusal_anomaly).
RECORD_SEVERITY: dict[str, str] = {r.code: r.severity for r in RECORD_CODES}
ISSUE_SEVERITY: dict[str, str] = {r.code: r.severity for r in ISSUE_CODES}

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
CONTRIBUTOR_BLOCKED = "contributor_blocked"
CONTRIBUTOR_NEW_VOLUME = "contributor_new_volume"
CONTRIBUTOR_CAMPAIGN = "contributor_campaign"
TASK_DOMINATED = "task_dominated"
CRITICAL_TASK_DOMINATED = "critical_task_dominated"
CHECK_SKIPPED = "check_skipped"
GX_CRITICAL_FAILURE = "gx_critical_failure"
GX_EXPECTATION_FAILED = "gx_expectation_failed"
CANARY_FLIP = "canary_flip"
#: A check's ``metrics["status"]`` when it cannot judge the batch (it also raises ``CHECK_SKIPPED``).
INSUFFICIENT_DATA = "insufficient_data"
GX_PREFIX = "gx_"
#: The prefix of the fallback (and legacy alias) codes, ``gx_<expectation type>``: not for ``meta.reason``.
GX_LEGACY_PREFIX = "gx_expect_"
_GX_CODE = re.compile(r"^gx_[a-z0-9]+(?:_[a-z0-9]+)*$")


@dataclass(frozen=True)
class GxReason:
    """The reason code of one expectation of a suite, as read from the suite file."""

    code: str
    expectation_type: str
    severity: str
    column: str | None = None
    why: str | None = None

    @property
    def legacy(self) -> str:
        """``gx_<expectation type>``: the code before suites named theirs, still accepted in policies."""
        return legacy_gx_reason(self.expectation_type)


def legacy_gx_reason(expectation_type: str) -> str:
    return f"{GX_PREFIX}{expectation_type}"


def expectation_reason(meta: Mapping[str, Any] | None, expectation_type: str) -> str:
    """An expectation's reason code: its ``meta.reason``, or ``gx_<expectation type>`` without one."""
    code = (meta or {}).get("reason")
    return str(code) if code else legacy_gx_reason(expectation_type)


def gx_code_problem(code: Any) -> str | None:
    """Why ``code`` cannot be a suite's ``meta.reason``, or ``None`` when it can."""
    if not isinstance(code, str) or not _GX_CODE.match(code):
        return f"meta.reason must be a snake_case code starting with {GX_PREFIX!r} (e.g. 'gx_mojibake'), got {code!r}"
    if code.startswith(GX_LEGACY_PREFIX):
        return (f"meta.reason {code!r}: codes starting with {GX_LEGACY_PREFIX!r} are the fallback of expectations "
                "without a meta.reason; name what the expectation catches instead")
    if code in ISSUE_REASONS or code in RECORD_REASONS:
        return f"meta.reason {code!r} is already a tunegate reason code; pick another name"
    return None


def gx_reasons(gx: Iterable[GxReason]) -> set[str]:
    """The record reasons expectations with these codes emit."""
    return {g.code for g in gx}


#: Codes of the shipped suites whose expectation changed type, with the type they had: that type's legacy alias still
#: matches them (``gx_refusal`` moved from the regex list to ``expect_column_values_to_not_be_refusals`` in 0.2.0, and a
#: policy that ignored ``gx_expect_column_values_to_not_match_regex_list`` to keep refusals still keeps them).
GX_MOVED: dict[str, str] = {"gx_refusal": "expect_column_values_to_not_match_regex_list"}


def gx_aliases(gx: Iterable[GxReason]) -> dict[str, frozenset[str]]:
    """Legacy alias ``gx_<expectation type>`` -> every code of the expectations of that type (and of the codes that
    had that type before, :data:`GX_MOVED`)."""
    aliases: dict[str, set[str]] = {}
    for g in gx:
        aliases.setdefault(g.legacy, set()).add(g.code)
        if g.code in GX_MOVED:
            aliases.setdefault(legacy_gx_reason(GX_MOVED[g.code]), set()).add(g.code)
    return {alias: frozenset(codes) for alias, codes in aliases.items()}


def gx_severity(gx: Iterable[GxReason]) -> dict[str, str]:
    """Code -> severity of its expectations (the most severe, when expectations sharing a code differ)."""
    out: dict[str, str] = {}
    for g in gx:
        previous = out.get(g.code)
        rank = SEVERITIES.index(g.severity) if g.severity in SEVERITIES else 0
        if previous is None or rank < SEVERITIES.index(previous):
            out[g.code] = SEVERITIES[rank]
    return out


def is_record_reason(code: str) -> bool:
    return code in RECORD_REASONS or (code.startswith(GX_PREFIX) and code not in ISSUE_REASONS)


def is_issue_reason(code: str) -> bool:
    return code in ISSUE_REASONS or code.startswith(GX_PREFIX)


def known_reasons(gx: Iterable[GxReason] = ()) -> set[str]:
    """Every reason code a policy may name for a run with suites of these expectations: the codes tunegate
    defines, the suites' codes and their legacy aliases ``gx_<expectation type>``."""
    gx = list(gx)
    return set(RECORD_REASONS) | set(ISSUE_REASONS) | gx_reasons(gx) | set(gx_aliases(gx))
