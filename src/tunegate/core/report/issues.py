"""The issues of a night, ranked for the reader, and what to do next.

Rank: severity (critical, warning, info; anything that halted the batch counts as critical), then poison
campaigns (``poison_campaign``, ``refusal_anomaly``) before other issues of the same severity, then the order
the checks ran in. The next steps depend on the verdict and name the command or the policy knob to act on.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Any

SEVERITY_RANK = {"critical": 0, "warning": 1, "info": 2}
#: Issue reasons that mean someone is attacking the data: first among issues of equal severity.
CAMPAIGN_REASONS = ("poison_campaign", "refusal_anomaly")
#: Halt reasons the gate itself raises (policy thresholds), by the policy knob that sets them.
_GATE_KNOBS = {"max_quarantined_fraction": "--max-quarantined-fraction",
               "max_rejected_fraction": "--max-rejected-fraction", "min_accepted": None}


@dataclass(frozen=True)
class Issue:
    severity: str
    reason: str
    check: str
    message: str
    halted: bool

    @property
    def rank(self) -> tuple[int, int]:
        severity = 0 if self.halted else SEVERITY_RANK.get(self.severity, 3)
        return severity, 0 if self.reason in CAMPAIGN_REASONS else 1


def ranked_issues(summary: dict[str, Any]) -> list[Issue]:
    """Every batch issue of every check, plus the gate's own halt reasons, most urgent first."""
    halts = list(summary.get("halt_reasons") or [])
    issues: list[Issue] = []
    seen: set[str] = set()
    for check, result in (summary.get("checks") or {}).items():
        for issue in (result or {}).get("issues", []):
            text = f"{check}: {issue['message']}"
            seen.add(text)
            issues.append(Issue(issue["severity"], issue["reason"], check, issue["message"], text in halts))
    for issue in (summary.get("canary") or {}).get("issues", []):  # the gate's canary audit (docs/audit.md)
        text = f"canary: {issue['message']}"
        seen.add(text)
        issues.append(Issue(issue["severity"], issue["reason"], "canary", issue["message"], text in halts))
    for text in halts:
        if text not in seen:  # a policy threshold, or accounting: raised by the gate, not by a check
            knob = next((k for k in _GATE_KNOBS if k in text), "gate")
            issues.append(Issue("critical", knob, "gate", text, True))
    order = {id(issue): i for i, issue in enumerate(issues)}
    return sorted(issues, key=lambda issue: (*issue.rank, order[id(issue)]))


def _cmd(*parts: str) -> str:
    return " ".join(shlex.quote(p) for p in parts)


def next_steps(summary: dict[str, Any], issues: list[Issue], phrases: list[dict[str, Any]]) -> list[str]:
    """What the on-call engineer does now, most important first. A step is plain text; a command or a policy
    knob in it is between backticks (the template shows those parts as code)."""
    out = "DIR"  # the folder holding the report: the page stays byte-identical wherever the night was written
    verdict = summary["verdict"]
    top = sorted((summary.get("reasons") or {}).items(), key=lambda kv: (-kv[1], kv[0]))[:3]
    top_text = ", ".join(f"{reason} ({n})" for reason, n in top)
    steps: list[str] = []
    if verdict == "halt":
        held = summary.get("held", 0)
        steps.append(f"The batch halted: nothing was published; the {held} records that passed their checks are "
                     f"held in {summary.get('outputs', {}).get('held', 'held.parquet')}, and no consumer sees them.")
        for issue in [i for i in issues if i.halted][:4]:
            steps.append(_halt_step(issue, summary, top_text))
        steps.append(f"When the cause is fixed, rerun the night into the same directory (it replaces the night): "
                     f"`{_cmd('tunegate', 'scan', 'INPUT', '--out', out)}` with the night's inputs and options.")
        return steps
    if verdict == "pass":
        return ["Nothing to do: every record passed and no check raised an alert; the batch is published."]
    if summary.get("quarantined"):
        steps.append(f"{summary['quarantined']} records were set aside (top reasons: {top_text}); the accepted "
                     "batch was published without them. Review them: "
                     f"`{_cmd('tunegate', 'review', 'list', out)}`, open one with "
                     f"`{_cmd('tunegate', 'review', 'show', out, 'ID')}`, release a false positive with "
                     f"`{_cmd('tunegate', 'review', 'release', out, 'ID')}` or confirm a bad one with "
                     f"`{_cmd('tunegate', 'review', 'confirm', out, 'ID')}`.")
    for p in phrases[:3]:
        contributors = ", ".join(list(p["contributors"])[:3]) or "unknown contributors"
        steps.append(f"Suspected {p['kind']}: the phrase '{p['phrase']}' in {p['records']} records over "
                     f"{p['task_count']} tasks, from {contributors}. Check those contributors' other submissions "
                     "(the phrase table below) before releasing any of these records.")
    for issue in issues:
        if issue.reason == "refusal_anomaly":
            steps.append(f"Over-refusal: {issue.message}. Confirm the refusals with "
                         f"`{_cmd('tunegate', 'review', 'list', out)}` (reason refusal_anomaly); release the "
                         "natural ones.")
        elif issue.reason == "contributor_flood":
            steps.append(f"Flood: {issue.message}. Ask that contributor what happened before releasing anything.")
    other = [i for i in issues if i.severity == "warning" and i.reason not in
             (*CAMPAIGN_REASONS, "contributor_flood")]
    if other:
        steps.append(f"{len(other)} other warning(s) raised an alert, the first: {other[0].check}: "
                     f"{other[0].message}. See Issues below.")
    if summary.get("rejected"):
        steps.append(f"{summary['rejected']} input records could not be parsed: see rejected.jsonl (file, line, "
                     "error) and the Rejected input section; fix the export if the errors repeat.")
    return steps


def _halt_step(issue: Issue, summary: dict[str, Any], top_text: str) -> str:
    policy = summary.get("policy") or {}
    if issue.reason == "max_quarantined_fraction":
        return (f"Halted by the quarantine rate: {issue.message}. The largest reasons: {top_text}. If those records "
                "really are bad, the upstream export broke: fix it and rerun. If the limit is too tight for this "
                "source, raise `max_quarantined_fraction` in the policy file (docs/policy.md) or pass "
                "`--max-quarantined-fraction F` to `tunegate scan`.")
    if issue.reason == "max_rejected_fraction":
        return (f"Halted by unparseable input: {issue.message}. Read rejected.jsonl (file, line, error) to find the "
                "broken export; if the limit is too tight, raise `max_rejected_fraction` in the policy file or pass "
                "`--max-rejected-fraction F`.")
    if issue.reason == "min_accepted":
        return (f"Halted because too little was accepted: {issue.message}. Check that the night's input is "
                "complete; the policy knob is `min_accepted`.")
    if issue.check == "gate":
        return f"Halted by the gate: {issue.message}."
    why = (f"the policy halts on reason `{issue.reason}` (`halt_reasons`)"
           if issue.reason in (policy.get("halt_reasons") or []) else
           f"the policy halts on `{issue.severity}` issues (`halt_severities`)")
    return (f"Halted by {issue.check} ({issue.reason}): {issue.message}. It halted because {why}; fix the data "
            "and rerun, or change that policy setting if this is expected.")
