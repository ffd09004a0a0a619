"""Content injection and over-refusal: what an attacker adds to responses, not to prompts.

AutoPoison-style attacks (Shu et al. 2023) rewrite the responses of some open-ended instructions:
*content injection* weaves a sentence naming a brand or product into them, *over-refusal* replaces
them by a refusal. Neither leaves a trace in the prompts, so this check reads the responses.

**Injected content.** A name woven into responses to unrelated instructions is a phrase that

1. recurs in many responses whose own prompt does not mention it (*unexplained* occurrences);
2. is rare in the prompts of the whole batch: the evidence is the Poisson log-likelihood ratio
   (nats) of the unexplained count against what the phrase's prompt frequency predicts for that
   many responses. Words a model likes to add (``additionally``) or code tokens score here too, so
3. it is written as a proper name: capitalised in mid-sentence in most of its occurrences;
4. it is spread over several groups (tasks/sources) with no group holding most of it.

Every response with an unexplained occurrence of such a phrase is flagged ``injected_content``.

**Refusals.** A response whose first sentences decline in the first person ("I'm sorry, but I can't
help with ...", "As an AI language model, I am unable to ...") is a refusal. When refusals among the
open-ended responses (records whose instruction is their own, not a task template) exceed the expected rate
significantly, every refusal there is flagged ``refusal_anomaly`` and the batch gets a warning.

Phrases found go into the metrics with their spread; a ``poison_campaign`` warning (injection) or
``refusal_anomaly`` warning (refusals) makes the gate alert. Thresholds were fixed on development
brands and seeds of ``bench/poison`` (docs/poison.md).
"""

from __future__ import annotations

import logging
import re
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

from tunegate.core.checks.base import BatchIssue, CanonicalBatch, Check, CheckResult, Finding
from tunegate.core.checks.poison._text import (
    Records,
    binomial_llr,
    codes,
    label_set,
    ngram_matrix,
    poisson_llr,
    spread,
    tokens,
)
from tunegate.core.reasons import CAMPAIGN, INJECTED_CONTENT, REFUSAL_ANOMALY
from tunegate.core.reasons import CHECK_SKIPPED as SKIPPED
from tunegate.core.reasons import INSUFFICIENT_DATA as INSUFFICIENT
from tunegate.exceptions import ConfigError

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)

#: ``metrics["status"]`` when the batch cannot support a test, with an ``info`` issue SKIPPED

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


def _distinct_responses(records: Records, rows: list[int]) -> tuple[list[int], dict[int, list[int]]]:
    """The first row of each distinct response (case and whitespace ignored), and its later copies."""
    first: dict[str, int] = {}
    copies: dict[int, list[int]] = {}
    for i in rows:
        key = " ".join(records.output[i].lower().split())
        kept = first.setdefault(key, i)
        if kept != i:
            copies.setdefault(kept, []).append(i)
    return list(first.values()), copies


class InjectedContentCheck(Check):
    """Find names woven into unrelated responses, and an anomalous rate of refusals (module docstring).

    Parameters (defaults measured on ``bench/poison`` dev batches; see docs/poison.md):

    * ``ngram_max`` (2): longest phrase, in words, that is scored.
    * ``min_records`` (10): a phrase must occur unexplained in at least this many responses.
    * ``min_response_words`` (8): shorter outputs (labels, short answers) are not responses.
    * ``max_phrase_df`` (0.05): phrases in more than this share of the responses are not scored.
    * ``min_evidence`` (60.0 nats): Poisson evidence of the unexplained count; natural stylistic words
      reach ~250, hence also
    * ``min_capitalized`` (0.7): share of occurrences capitalised in mid-sentence (a proper name),
    * ``min_groups`` (3) and ``max_group_share`` (0.5): spread over tasks/sources.
    * ``refusal_rate`` (0.005): expected share of refusals among open-ended responses (measured 0.2%
      on the clean dev batches), and ``refusal_min_evidence`` (10.0 nats): binomial evidence above it
      that makes the refusal rate anomalous.
    * ``template_records`` (5): an instruction shared by this many records is a task template; records
      with their own instruction are open-ended.
    * ``max_chars`` (4000): characters of each output and prompt scanned.
    * ``max_phrases`` (20): phrases reported in the metrics.
    * ``min_responses`` (200): fewer responses (or fewer than ``min_groups`` groups among them) and the
      injection scan is skipped: ``metrics["status"] == "insufficient_data"``, an ``info`` issue
      ``check_skipped``. ``refusal_min_responses`` (200): the same for the refusal-rate test (at 0.5%,
      200 open-ended responses hold one refusal).
    """

    name = "poison_content"

    def __init__(self, *, ngram_max: int = 2, min_records: int = 10, min_response_words: int = 8,
                 max_phrase_df: float = 0.05, min_evidence: float = 60.0, min_capitalized: float = 0.7,
                 min_groups: int = 3, max_group_share: float = 0.5, refusal_rate: float = 0.005,
                 refusal_min_evidence: float = 10.0, template_records: int = 5, max_chars: int = 4000,
                 max_phrases: int = 20, min_responses: int = 200, refusal_min_responses: int = 200) -> None:
        for name, value in (("ngram_max", ngram_max), ("min_records", min_records),
                            ("min_response_words", min_response_words), ("min_groups", min_groups),
                            ("max_chars", max_chars), ("max_phrases", max_phrases),
                            ("template_records", template_records), ("min_responses", min_responses),
                            ("refusal_min_responses", refusal_min_responses)):
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"poison_content: {name} must be a positive integer, got {value!r}")
        for name, fraction in (("max_phrase_df", max_phrase_df), ("min_capitalized", min_capitalized),
                               ("max_group_share", max_group_share), ("refusal_rate", refusal_rate)):
            if not 0.0 < float(fraction) <= 1.0:
                raise ConfigError(f"poison_content: {name} must be a fraction in (0, 1], got {fraction!r}")
        for name, nats in (("min_evidence", min_evidence), ("refusal_min_evidence", refusal_min_evidence)):
            if float(nats) <= 0:
                raise ConfigError(f"poison_content: {name} must be positive (nats), got {nats!r}")
        self.ngram_max = ngram_max
        self.min_records = min_records
        self.min_response_words = min_response_words
        self.max_phrase_df = float(max_phrase_df)
        self.min_evidence = float(min_evidence)
        self.min_capitalized = float(min_capitalized)
        self.min_groups = min_groups
        self.max_group_share = float(max_group_share)
        self.refusal_rate = float(refusal_rate)
        self.refusal_min_evidence = float(refusal_min_evidence)
        self.template_records = template_records
        self.max_chars = max_chars
        self.max_phrases = max_phrases
        self.min_responses = min_responses
        self.refusal_min_responses = refusal_min_responses

    def run(self, batch: CanonicalBatch) -> CheckResult:
        started = time.monotonic()
        records = Records.read(batch)
        label_groups, open_rows = self._group_kinds(records)
        findings: list[Finding] = []
        issues: list[BatchIssue] = []
        skipped: list[str] = []
        responses = [i for i in range(records.size) if records.group[i] not in label_groups
                     and len(tokens(records.output[i][: self.max_chars])) >= self.min_response_words]
        # One vote per distinct response: the same answer re-sent under other instructions (a resubmitted or
        # recycled record) is one response, not evidence of injection. Injected content varies its response.
        responses, copies = _distinct_responses(records, responses)
        response_groups = len({records.group[i] for i in responses})
        phrases: list[dict[str, Any]] = []
        if len(responses) < self.min_responses or response_groups < self.min_groups:
            # a name is "injected" when it recurs across groups far beyond what the prompts explain: with
            # few responses or groups neither the count nor the spread means anything
            skipped.append(f"injected-content scan skipped: {len(responses)} responses of >= "
                           f"{self.min_response_words} words in {response_groups} group(s); it needs >= "
                           f"{self.min_responses} responses in >= {self.min_groups} groups")
        else:
            phrases = self._injected(records, responses, findings)
            findings += [Finding(j, f.reason, f.score, {**f.detail, "copy_of_row": f.row})
                         for f in list(findings) if f.reason == INJECTED_CONTENT for j in copies.get(f.row, ())]
        if phrases:
            top = ", ".join(f"'{p['phrase']}' ({p['records']} responses, {p['groups']} groups)" for p in phrases[:3])
            issues.append(BatchIssue(CAMPAIGN, "warning",
                                     f"{len(phrases)} name(s) recur in responses to unrelated instructions: {top}"))
        if len(open_rows) < self.refusal_min_responses:
            skipped.append(f"refusal-rate test skipped: {len(open_rows)} open-ended responses; a rate of "
                           f"{self.refusal_rate:.1%} needs >= {self.refusal_min_responses}")
            refusals = self._refusals(records, open_rows, findings, test=False)
        else:
            refusals = self._refusals(records, open_rows, findings, test=True)
        if refusals["anomalous"]:
            issues.append(BatchIssue(REFUSAL_ANOMALY, "warning",
                                     f"{refusals['refusals']} of {refusals['responses']} open-ended responses "
                                     f"({refusals['rate']:.1%}) are refusals; expected at most "
                                     f"{self.refusal_rate:.1%} (evidence {refusals['evidence']:.0f} nats)"))
        status_reason = "; ".join(skipped) or (f"{len(responses)} responses in {response_groups} groups and "
                                              f"{len(open_rows)} open-ended responses scanned")
        if skipped:
            issues.append(BatchIssue(SKIPPED, "info", status_reason))
        metrics: dict[str, Any] = {
            "status": INSUFFICIENT if skipped else "ok",
            "status_reason": status_reason,
            "records": records.size,
            "responses": len(responses),
            "suspicious_phrases": phrases[: self.max_phrases],
            "refusals": refusals,
            "seconds": round(time.monotonic() - started, 2),
        }
        log.info("poison_content: %s; %d injected phrase(s), refusal rate %.2f%% (%s), %d records flagged in %.1fs",
                 metrics["status"], len(phrases), 100 * refusals["rate"],
                 "anomalous" if refusals["anomalous"] else "not tested" if refusals["tested"] is False else "normal",
                 len({f.row for f in findings}), metrics["seconds"])
        return CheckResult(self.name, findings, issues, metrics)

    def _group_kinds(self, records: Records) -> tuple[set[str], set[int]]:
        """Classification groups (their outputs are labels) and the open-ended records.

        A record is open-ended when its instruction is its own: shared by fewer than
        ``template_records`` records of the batch (a task template repeats on every instance).
        """
        label_groups = {name for name, rows in records.groups().items()
                        if label_set([records.output[i] for i in rows], min_records=50, max_labels=10, coverage=0.95)}
        shared = Counter(records.instruction)
        open_rows = {i for i, ins in enumerate(records.instruction)
                     if shared[ins] < self.template_records and records.group[i] not in label_groups}
        return label_groups, open_rows

    # ------------------------------------------------------------------------------------------
    def _injected(self, records: Records, responses: list[int], findings: list[Finding]) -> list[dict[str, Any]]:
        import numpy as np

        outputs = [records.output[i][: self.max_chars] for i in responses]
        o, vocab = ngram_matrix(outputs, ngram_max=self.ngram_max, min_df=self.min_records,
                                max_df=self.max_phrase_df if len(outputs) >= 200 else 1.0)
        if not o.shape[1]:
            return []
        # Prompts: each distinct instruction is read once (task templates repeat on every instance).
        instr_index, instructions = codes(records.instruction)
        ins, _ = ngram_matrix([t[: self.max_chars] for t in instructions], ngram_max=self.ngram_max, min_df=1,
                              vocabulary=list(vocab))
        inp, _ = ngram_matrix([t[: self.max_chars] for t in records.input], ngram_max=self.ngram_max, min_df=1,
                              vocabulary=list(vocab))
        p_resp = ins[instr_index[responses]] + inp[responses]
        p_resp.data[:] = 1.0
        unexplained = (o - o.multiply(p_resp)).tocsc()
        unexplained.eliminate_zeros()
        u = np.asarray(unexplained.sum(axis=0)).ravel()
        # records whose prompt has the phrase (a record with it in both instruction and input counts twice)
        p = np.bincount(instr_index, minlength=len(instructions)) @ ins + np.asarray(inp.sum(axis=0)).ravel()
        expected = len(responses) * (p + 1.0) / records.size
        group = np.asarray([records.group[i] for i in responses], dtype=object)
        candidates = []
        for c in np.flatnonzero(u >= self.min_records).tolist():
            evidence = poisson_llr(float(u[c]), float(expected[c]))
            if evidence < self.min_evidence:
                continue
            rows = unexplained.indices[unexplained.indptr[c]:unexplained.indptr[c + 1]]
            groups = Counter(group[rows].tolist())
            if len(groups) < self.min_groups or groups.most_common(1)[0][1] > self.max_group_share * len(rows):
                continue
            capitalized = _capitalized_share(str(vocab[c]), [outputs[r] for r in rows[:100].tolist()])
            if capitalized < self.min_capitalized:
                continue
            candidates.append((evidence, c, rows, groups, capitalized))
        candidates.sort(key=lambda t: (-t[0], str(vocab[t[1]])))
        reported: list[dict[str, Any]] = []
        clusters: list[list[tuple[Any, ...]]] = []  # candidates sharing responses: one name ("zephyr motors")
        for cand in candidates:
            rset = set(cand[2].tolist())
            home = next((cl for cl in clusters if any(
                len(rset & set(m[2].tolist())) >= 0.5 * min(len(rset), len(m[2])) for m in cl)), None)
            if home is None:
                clusters.append([cand])
            else:
                home.append(cand)
        for cl in clusters:
            # named by its longest member among the strongest (the whole name, not one of its words)
            top = max(m[0] for m in cl)
            evidence, c, _, groups, capitalized = max((m for m in cl if m[0] >= 0.5 * top),
                                                      key=lambda m: (len(str(vocab[m[1]]).split()), m[0]))
            rset = set().union(*(set(m[2].tolist()) for m in cl))
            aliases = [str(vocab[m[1]]) for m in cl if m[1] != c]
            phrase = str(vocab[c])
            rows_sorted = sorted(rset)
            detail = {"phrase": phrase, "evidence": round(evidence, 1), "records": len(rows_sorted),
                      "in_prompts": int(p[c]), "groups": len(groups)}
            for r in rows_sorted:
                findings.append(Finding(responses[r], INJECTED_CONTENT, evidence,
                                        {**detail, "sentence": _sentence_with(phrase, outputs[r])}))
            reported.append({**detail, "expected": round(float(expected[c]), 1),
                             "capitalized": round(capitalized, 2), "group_spread": dict(groups.most_common(10)),
                             "contributors": spread([records.contributor[responses[r]] for r in rows_sorted]),
                             "aliases": aliases[:5]})
        return reported

    # ------------------------------------------------------------------------------------------
    def _refusals(self, records: Records, open_rows: set[int], findings: list[Finding], *, test: bool
                  ) -> dict[str, Any]:
        rows = sorted(open_rows)
        refusing = [i for i in rows if is_refusal(records.output[i])]
        n, k = len(rows), len(refusing)
        evidence = float(binomial_llr(k, n, self.refusal_rate)) if n and test else 0.0
        anomalous = evidence >= self.refusal_min_evidence
        if anomalous:
            for i in refusing:
                findings.append(Finding(i, REFUSAL_ANOMALY, evidence,
                                        {"refusal": records.output[i][:200], "batch_rate": round(k / n, 4),
                                         "expected_rate": self.refusal_rate, "group": records.group[i]}))
        per_group = Counter(records.group[i] for i in refusing)
        return {"responses": n, "refusals": k, "rate": round(k / n, 4) if n else 0.0,
                "evidence": round(evidence, 1), "anomalous": anomalous, "tested": test,
                "by_group": dict(per_group.most_common(10))}


def _phrase_pattern(phrase: str) -> re.Pattern[str]:
    return re.compile(r"\b" + r"\W+".join(re.escape(w) for w in phrase.split()) + r"\b", re.IGNORECASE)


def _capitalized_share(phrase: str, texts: list[str]) -> float:
    """Share of the phrase's occurrences written with a capital in mid-sentence (as a proper name is)."""
    pattern = _phrase_pattern(phrase)
    hits = caps = 0
    for text in texts:
        for m in pattern.finditer(text):
            before = text[: m.start()].rstrip()
            if not before or before[-1] in ".!?:;\n\"'*#-(":
                continue  # sentence or list-item start: capitalised anyway
            hits += 1
            caps += m.group(0)[0].isupper()
    return caps / hits if hits else 0.0


def _sentence_with(phrase: str, text: str, limit: int = 200) -> str:
    """The sentence around the phrase's first occurrence (at most ``limit`` characters, centred on it)."""
    m = _phrase_pattern(phrase).search(text)
    if m is None:
        return text[:limit]
    start = max((text.rfind(p, 0, m.start()) for p in ".!?\n"), default=-1) + 1
    ends = [i for i in (text.find(p, m.end()) for p in ".!?\n") if i >= 0]
    end = min(ends) + 1 if ends else len(text)
    if end - start > limit:
        start = max(start, m.start() - limit // 2)
        end = min(end, start + limit)
    return text[start:end].strip()
