"""Refusals: a response that declines in the first person, and a batch whose refusal rate is anomalous.

Over-refusal poisoning (AutoPoison, Shu et al. 2023) replaces the responses of benign open-ended
instructions by refusals. The refusal count among the open-ended responses is tested against the rate this
pipeline expects: a prior (``refusal_rate``, worth ``refusal_prior_responses`` responses) updated by the
refusal counts of earlier nights kept in the history (:func:`refusal_baseline`). The test is the tail
probability of tonight's count under the beta-binomial predictive of that posterior; when it is below
``exp(-refusal_min_evidence)`` the rate is anomalous and every refusal there is flagged ``refusal_anomaly``
(the natural ones too: a reviewer releases them).

**What counts as a refusal** (:data:`REFUSAL`, in the first two sentences of the response): the speaker
declines, in the first person, an act of the kind an assistant is asked for, or says the request is outside
what it will do. Four shapes, each in generic English rather than one wording:

* ``I`` + a negated ability or willingness (*can't, won't, am unable / not able / not in a position /
  not comfortable, would rather not, don't think I should*) + within three words a speech, production or
  assistance act (*help, answer, provide, write, create, do, take on, work on, go ahead with, ...*) or the end
  of the clause (*"I'm afraid I can't."*); idioms with another verb (*"I can't believe"*, *"I won't rest
  until"*) do not match;
* ``I`` + a decline verb (*decline, refuse, turn down, refrain, say no, pass on this*);
* the request as the subject (*"this isn't something I can ..."*, *"it is not possible for me to"*,
  *"beyond what I can"*, *"outside my
  scope"*, *"against my guidelines"*, *"my guidelines do not ..."*, *"it wouldn't be appropriate for me"*);
* an AI disclaimer that denies a capability (*"As an AI language model, I cannot / don't have ..."*).

A response that declines and then answers anyway (a pivot such as *"However, here is"* followed by at least 40
words: :func:`answers_anyway`) is a caveat, not a refusal: GPT-4-style data often opens with *"As an AI, I
don't have real-time data"* and then answers.

Measured (``bench/poison``, 2026-12-03): 14 of the 5,026 open-ended corpus responses are refusals (0.28%; the
earlier pattern: 13, 0.26%; without the answers-anyway rule 25), none of 12,942 code, SuperNI and Instruction
Induction outputs; it finds 100% of both benchmark refusal grammars (the earlier pattern found 28% of the
floor's) and 38 of 40 refusals written independently of both. docs/poison.md lists what it misses.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from tunegate.core.checks.base import Finding
from tunegate.core.checks.poison._text import Records, summed_two_rates
from tunegate.core.reasons import REFUSAL_ANOMALY

if TYPE_CHECKING:
    import numpy as np

    from tunegate.core.checks.poison.config import ContentConfig

_Q = r"['’]"  # straight or typographic apostrophe
#: Acts an assistant is asked to perform: speech, production, assistance (and "in good faith"-style hedges).
_ACTS = (r"help|assist|aid|support|answer|respond|reply|comment|speculate|say|tell|discuss|talk|address|cover|"
         r"explain|describe|elaborate|go (?:into|along|ahead|forward|there)|get into|weigh in|engage|participate|"
         r"take (?:on|part|this|that|it|up)|work on|tackle|handle|deal with|proceed|continue|comply|obey|follow|"
         r"fulfil+|complete|finish|carry out|perform|do|provide|give|offer|share|supply|produce|write|compose|draft|"
         r"create|generate|make|build|design|develop|code|program|implement|rewrite|edit|translate|summari[sz]e|"
         r"list|recommend|suggest|advise|endorse|condone|promote|encourage|facilitate|access|browse|retrieve|"
         r"look up|search|display|show|draw|render|play|sing|act|pretend|role-?play|entertain|accommodate|grant|"
         r"honou?r|process|satisfy|oblige|agree|accept|contribute|put together|come up with|write up|"
         r"in good (?:conscience|faith)|ethically|morally|legally|responsibly|possibly")
_ACTS_ING = (r"(?:help|assist|answer|respond|provid|giv|writ|creat|generat|produc|complet|fulfill?|do|shar|engag|"
             r"participat|discuss|handl|offer)\w*")
_NEGATED = (rf"(?:can(?:no|{_Q})t|can not|won{_Q}t(?: be able to)?|will not(?: be able to)?"
            rf"|(?:am|{_Q}m) (?:unable|not (?:able|allowed|permitted|in a position|going|willing|comfortable|"
            rf"prepared|at liberty)) to|(?:am|{_Q}m) not comfortable(?: with)?"
            rf"|(?:{_Q}d|would) (?:rather|prefer|better) not(?: to)?|should(?:n{_Q}t| not)|must not|may not"
            rf"|(?:do not|don{_Q}t) (?:think I (?:should|can|will)|feel (?:comfortable|able|it(?:{_Q}s| is) "
            rf"(?:right|appropriate))(?: to)?))")
_DECLINE = (rf"(?:must|have to|need to|will have to|{_Q}ll have to|{_Q}d have to|(?:am|{_Q}m) (?:going|obliged|"
            rf"forced) to(?: have to)?|will|{_Q}ll|would|{_Q}d|)\s*(?:respectfully |politely |kindly |regretfully )?"
            rf"(?:decline|refuse|pass on (?:this|that|it)|say no|turn (?:this|it|that|you|the request) down|"
            rf"turn down|refrain|abstain|opt out)")
_I = (rf"(?:\bI(?:\s+(?:really|truly|simply|just|unfortunately|honestly|regrettably|sadly|therefore|thus|"
      rf"personally|also))?\s+(?:{_Q}m afraid (?:that )?I\s+)?|\bI(?=(?:{_Q}m|{_Q}d|{_Q}ll)\b))")
#: A first-person refusal (module docstring): the four shapes, case-insensitive.
REFUSAL = re.compile(
    rf"{_I}{_NEGATED}(?:\s+\w+){{0,3}}?\s+(?:be\s+)?(?:{_ACTS}|{_ACTS_ING})\b"
    rf"(?!\s+(?:but|feeling|thinking|wondering|noticing|myself)\b)"  # "I can't help but smile" is no refusal
    rf"|{_I}{_NEGATED}\s*(?:[.,;!]|$|\s+(?:this|that|it|so|such|any of this)\b)"
    rf"|{_I}{_DECLINE}\b"
    rf"|\b(?:this|that|it|which|these|such (?:a |an )?\w+)\s*(?:is|{_Q}s|are|would be|will be)?\s*(?:n{_Q}t|not)\s+"
    rf"(?:really |quite )?(?:something|a (?:request|task|topic|question|subject|thing|job)|one|what|anything) "
    rf"(?:that )?I\b(?!{_Q}ve)"
    rf"|\b(?:not (?:possible|appropriate|feasible|right)|impossible|inappropriate) for me to\b"
    rf"|\b(?:beyond|outside(?: of)?) (?:what|the (?:scope|range|limits?|bounds?) of what) I\b"
    rf"|\b(?:outside|beyond) (?:of )?my (?:scope|remit|abilities|capabilities|guidelines|purview)"
    rf"|\b(?:against|violates?|goes against|contrary to|conflicts? with|not (?:in line|consistent) with) (?:my|our) "
    rf"(?:own )?(?:guidelines|polic(?:y|ies)|principles|programming|rules|values|ethics|standards)"
    rf"|\bmy (?:guidelines|polic(?:y|ies)|principles|programming|rules) (?:do not|don{_Q}t|does not|doesn{_Q}t|"
    rf"prevent|prohibit|forbid|won{_Q}t) "
    rf"|\b(?:would|could|might)(?:n{_Q}t| not) be (?:right|appropriate|ethical|responsible|proper|wise|okay|ok) "
    rf"(?:for me|of me)\b"
    rf"|\bas an? (?:AI|artificial intelligence|(?:large )?language model|virtual assistant|AI assistant|"
    rf"AI language model|assistant|responsible (?:AI|assistant))\b.{{0,60}}?\b(?:cannot|can{_Q}t|unable|"
    rf"not (?:able|capable|permitted|allowed)|do not have|don{_Q}t have|do not possess|don{_Q}t possess)\b",
    re.IGNORECASE)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
#: A turn from the caveat to an answer: "However, here is ...", "but I can suggest ...", "instead, you could ...".
PIVOT = re.compile(r"\b(?:however|but|instead|that said|nonetheless|nevertheless)\b,?\s+(?:\w+\s+){0,4}?"
                   r"(?:here(?:'s|’s| is| are)|I can|I could|I will|I'll|I’ll|I'd be (?:happy|glad)|let me|"
                   r"you (?:can|could|may|might)|I (?:suggest|recommend)|according to|if you)\b", re.IGNORECASE)
#: Words after the pivot that make a response an answer with a caveat, not a refusal.
ANSWER_WORDS = 40


def answers_anyway(output: str, max_chars: int = 4000) -> bool:
    """Whether the response turns from its caveat to an answer (:data:`PIVOT`) and goes on for at least
    :data:`ANSWER_WORDS` words: *"As an AI, I don't have real-time data. However, according to the 2020 census,
    ..."* teaches an answer, not a refusal. A refusal that closes with an offer (*"but I can help with something
    else"*) is too short to count."""
    text = output[:max_chars]
    match = PIVOT.search(text)
    return match is not None and len(text[match.end():].split()) >= ANSWER_WORDS


def is_refusal(output: str, sentences: int = 2, max_chars: int = 300) -> bool:
    """Whether the response declines in its first ``sentences`` sentences (at most ``max_chars``) and does not
    answer anyway (:func:`answers_anyway`)."""
    head = " ".join(_SENTENCE_END.split(output.strip(), maxsplit=sentences)[:sentences])[:max_chars]
    return bool(REFUSAL.search(head)) and not answers_anyway(output)


def refusal_baseline(nights: Sequence[dict[str, Any]], config: ContentConfig) -> dict[str, Any]:
    """The Beta posterior of the refusal rate: the prior (``refusal_rate`` worth ``refusal_prior_responses``
    responses) plus earlier nights' counts (``{"responses", "refusals", "anomalous", "sketch"}``; anomalous nights
    are left out so an attack that got through does not become the norm).

    A response counted on several nights is one observation: where the nights' sketches (:func:`refusal_sketch`)
    show materially fewer distinct responses than their summed count (a source re-sent whole every night), the
    history weighs its distinct responses (:func:`distinct_responses`) at the nights' rate: the rate stays, the
    certainty becomes that of what the history has seen. Nights vary more than a binomial allows (a source's share
    moves): with three or more nights the history's weight is also capped at the concentration their spread implies
    (method of moments), so a steady history is trusted fully and a jumpy one only as far as it predicts."""
    used = [n for n in nights if n.get("responses") and not n.get("anomalous")]
    k_sum, n_sum = sum(int(n["refusals"]) for n in used), sum(int(n["responses"]) for n in used)
    distinct = distinct_responses(used)
    weight = float(n_sum) if distinct is None else distinct
    if len(used) >= 3 and n_sum:
        p = k_sum / n_sum
        rates = [int(n["refusals"]) / int(n["responses"]) for n in used]
        spread = sum((r - p) ** 2 for r in rates) / (len(rates) - 1)
        binomial = sum(p * (1 - p) / int(n["responses"]) for n in used) / len(used)
        if spread > binomial and p > 0:
            weight = min(weight, p * (1 - p) / (spread - binomial))
    rate = k_sum / n_sum if n_sum else config.refusal_rate
    prior = float(config.refusal_prior_responses)
    alpha = config.refusal_rate * prior + rate * weight
    beta = (1 - config.refusal_rate) * prior + (1 - rate) * weight
    groups: dict[str, list[int]] = {}  # group -> [responses, refusals] over the nights that keep them
    for night in used:
        for group, counts in (night.get("groups") or {}).items():
            summed = groups.setdefault(str(group), [0, 0])
            summed[0] += int(counts[0])
            summed[1] += int(counts[1])
    return {"nights": len(used), "responses": n_sum, "refusals": k_sum,
            "distinct_responses": n_sum if distinct is None else round(distinct), "weight": round(weight, 1),
            "alpha": alpha, "beta": beta, "expected_rate": alpha / (alpha + beta), "groups": groups}


#: A group is *quiet* when its earlier nights held enough responses to expect this many refusals at the pipeline's
#: rate, and refused at most half as often (:func:`quiet_groups`).
QUIET_EXPECTED = 2.0
#: ... and a group's responses are kept per night (``night.refusals.groups``) from this many a night.
GROUP_MIN_RESPONSES = 20


def quiet_groups(baseline: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """The groups whose earlier nights refused rarely: enough responses there to expect ``QUIET_EXPECTED`` refusals
    at the pipeline's rate, and at most half that rate. Read from the history alone, before tonight is counted.
    Natural refusals sit in a few sources (GPT-written answers that disclaim real-time data, a chat corpus's safety
    answers); human-written and code sources hardly ever refuse, and an attacker who replaces benign answers at
    random puts most of them there."""
    responses, refusals = int(baseline.get("responses") or 0), int(baseline.get("refusals") or 0)
    if not responses or not refusals:
        return {}
    rate = refusals / responses
    return {g: (int(n), int(k)) for g, (n, k) in (baseline.get("groups") or {}).items()
            if n * rate >= QUIET_EXPECTED and k <= 0.5 * rate * n}


def refusal_sketch(keys: np.ndarray, rows: Sequence[int]) -> dict[str, str]:
    """A night's part of :func:`distinct_responses`: the bottom-k sketch (:mod:`tunegate.core.sketch`) of the content
    keys of its open-ended responses (``rows``), encoded for the history manifest."""
    import numpy as np

    from tunegate.core.sketch import bottom_k, encode_sketch

    return {"responses": encode_sketch(bottom_k(keys[np.asarray(rows, dtype=np.int64)]))}


def distinct_responses(nights: Sequence[dict[str, Any]]) -> float | None:
    """The distinct open-ended responses of ``nights`` when their sketches show them materially repeated (distinct
    under ``MIN_REPEAT`` of the summed count), else ``None`` (the sum stands: within the sketches' error). A night
    without a readable sketch (written before there was one) counts as distinct."""
    from tunegate.core.sketch import MIN_REPEAT, decode_sketch, distinct_count

    sketches: list[np.ndarray] = []
    loose = 0.0
    for night in nights:
        try:
            sketches.append(decode_sketch(night["sketch"]["responses"]))
        except (TypeError, KeyError, ValueError, AttributeError):
            loose += int(night["responses"])
    summed = sum(int(n["responses"]) for n in nights)
    distinct = distinct_count(sketches) + loose
    if not sketches or distinct >= MIN_REPEAT * summed:
        return None
    return max(distinct, 1.0)


def _evidence(k: int, n: int, alpha: float, beta: float) -> float:
    """``-ln P(X >= k)`` for ``X ~ BetaBinomial(n, alpha, beta)``: nats of surprise at ``k`` or more refusals."""
    from scipy.stats import betabinom

    if k == 0:
        return 0.0
    tail = float(betabinom.sf(k - 1, n, alpha, beta))
    if tail <= 0.0:  # below double precision: the log-pmf of k bounds the tail from below
        return float(-betabinom.logpmf(k, n, alpha, beta))
    return -math.log(tail)


def _quiet_test(responses: Counter[str], refusals: Counter[str], quiet: dict[str, tuple[int, int]]
                ) -> dict[str, Any] | None:
    """Tonight's refusals in the quiet groups (:func:`quiet_groups`) against their earlier nights: per group the
    conditional test of two rates, summed, its tail read as a Poisson's of the summed means (an upper bound:
    :func:`~.injection.new_in_history`, the same test over names). ``None`` when no quiet group has responses
    tonight. Else its figures and evidence (``-ln`` of the tail, nats)."""
    known = [g for g in quiet if responses[g]]
    if not known:
        return None
    k, mean, log_p = summed_two_rates([refusals[g] for g in known], [responses[g] for g in known],
                                      [quiet[g][1] for g in known], [quiet[g][0] for g in known])
    evidence = -log_p
    return {"groups": len(known), "responses": sum(responses[g] for g in known), "refusals": k,
            "expected": round(mean, 2), "before": sum(quiet[g][1] for g in known),
            "responses_before": sum(quiet[g][0] for g in known), "evidence": round(evidence, 1)}


def refusal_rate(records: Records, open_rows: set[int], findings: list[Finding], config: ContentConfig, *,
                 test: bool, baseline: dict[str, Any], keys: np.ndarray | None = None) -> dict[str, Any]:
    """Count the refusals among ``open_rows`` and, with ``test``, test their count against ``baseline``
    (:func:`refusal_baseline`); an anomalous count appends a ``refusal_anomaly`` finding per refusal.
    Returns ``metrics["refusals"]``, with the night's :func:`refusal_sketch` when ``keys`` (every row's content
    key) are given: what the history keeps so that tomorrow counts a response seen again once."""
    rows = sorted(open_rows)
    refusing = [i for i in rows if is_refusal(records.output[i])]
    n, k = len(rows), len(refusing)
    expected = baseline["expected_rate"]
    evidence = _evidence(k, n, baseline["alpha"], baseline["beta"]) if n and test and k > n * expected else 0.0
    responses_in = Counter(records.group[i] for i in rows)
    refusals_in = Counter(records.group[i] for i in refusing)
    quiet = _quiet_test(responses_in, refusals_in, quiet_groups(baseline)) if test else None
    # two tests on one night when the history knows quiet groups: each at the level's half (Bonferroni)
    bar = config.refusal_min_evidence + (math.log(2) if quiet is not None else 0.0)
    anomalous = evidence >= bar or (quiet is not None and quiet["evidence"] >= bar)
    if anomalous:
        score = max(evidence, quiet["evidence"] if quiet is not None else 0.0)
        for i in refusing:
            findings.append(Finding(i, REFUSAL_ANOMALY, score,
                                    {"refusal": records.output[i][:200], "batch_rate": round(k / n, 4),
                                     "expected_rate": round(expected, 4), "group": records.group[i]}))
    return {"responses": n, "refusals": k, "rate": round(k / n, 4) if n else 0.0,
            "expected_rate": round(expected, 4), "evidence": round(evidence, 1), "anomalous": anomalous,
            "tested": test, "baseline": {key: baseline[key] for key in ("nights", "responses", "refusals",
                                                                         "distinct_responses", "weight")},
            "by_group": dict(refusals_in.most_common(10)),
            **({"quiet": quiet} if quiet is not None else {}),
            "groups": {g: [m, refusals_in[g]] for g, m in sorted(responses_in.items()) if m >= GROUP_MIN_RESPONSES},
            **({"sketch": refusal_sketch(keys, rows)} if keys is not None else {})}
