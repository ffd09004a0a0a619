"""Refusals: a response that declines in the first person, and a batch whose refusal rate is anomalous.

Over-refusal poisoning (AutoPoison, Shu et al. 2023) replaces the responses of benign open-ended
instructions by refusals. The refusal count among the open-ended responses is tested against the
expected rate with a binomial log-likelihood ratio; when it is anomalous every refusal there is flagged
``refusal_anomaly`` (the natural ones too: a reviewer releases them).
"""

from __future__ import annotations

import re
from collections import Counter
from typing import TYPE_CHECKING, Any

from tunegate.core.checks.base import Finding
from tunegate.core.checks.poison._text import Records, binomial_llr
from tunegate.core.reasons import REFUSAL_ANOMALY

if TYPE_CHECKING:
    from tunegate.core.checks.poison.config import ContentConfig

_VERBS = (r"help|assist|answer|respond|reply|provide|complete|fulfil+|comply|engage|create|generate|write|access|"
          r"share|give|offer|support|perform|carry out|do (?:that|this|so)|draw|display|process|determine|retrieve|"
          r"estimate|summari[sz]e|browse|predict|make")
#: A first-person refusal: "I can't help", "I'm unable to answer", "it is not possible for me to ...".
REFUSAL = re.compile(
    r"\b(?:i\s*(?:cannot|can\s*not|can't|can’t|won't|won’t|will not|must decline to|am unable to|'m unable to|"
    r"’m unable to|am not able to|'m not able to|’m not able to|do not feel comfortable|don't feel comfortable)"
    r"|(?:it is|it's|it’s) not possible for me to)\s+(?:\w+\s+){0,3}?(?:" + _VERBS + r")\b"
    r"|\bi (?:must|have to) (?:decline|refuse)\b|\bi'?m not comfortable\b",
    re.IGNORECASE)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def is_refusal(output: str, sentences: int = 2, max_chars: int = 300) -> bool:
    """Whether the response declines in its first ``sentences`` sentences (at most ``max_chars``)."""
    head = " ".join(_SENTENCE_END.split(output.strip(), maxsplit=sentences)[:sentences])[:max_chars]
    return bool(REFUSAL.search(head))


def refusal_rate(records: Records, open_rows: set[int], findings: list[Finding], config: ContentConfig, *,
                 test: bool) -> dict[str, Any]:
    """Count the refusals among ``open_rows`` and, with ``test``, test their rate against ``refusal_rate``;
    an anomalous rate appends a ``refusal_anomaly`` finding per refusal. Returns ``metrics["refusals"]``."""
    rows = sorted(open_rows)
    refusing = [i for i in rows if is_refusal(records.output[i])]
    n, k = len(rows), len(refusing)
    evidence = float(binomial_llr(k, n, config.refusal_rate)) if n and test else 0.0
    anomalous = evidence >= config.refusal_min_evidence
    if anomalous:
        for i in refusing:
            findings.append(Finding(i, REFUSAL_ANOMALY, evidence,
                                    {"refusal": records.output[i][:200], "batch_rate": round(k / n, 4),
                                     "expected_rate": config.refusal_rate, "group": records.group[i]}))
    per_group = Counter(records.group[i] for i in refusing)
    return {"responses": n, "refusals": k, "rate": round(k / n, 4) if n else 0.0,
            "evidence": round(evidence, 1), "anomalous": anomalous, "tested": test,
            "by_group": dict(per_group.most_common(10))}
