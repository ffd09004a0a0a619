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

Every response with an unexplained occurrence of such a phrase is flagged ``injected_content``. With a history
(``history_dir``), the earlier nights' responses speak too: a name in one group is that group's vocabulary only if its
earlier nights wrote it as often (:func:`~.injection.new_to_source`), and a name the prompts name too often for
condition 2 (a popular brand) is still injected when its unexplained responses that write it as a name tonight exceed
what the earlier nights predict (:func:`~.injection.new_in_history`; "Apple" is counted apart from the fruit).

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
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

from tunegate.core.checks.base import BatchIssue, CanonicalBatch, Check, CheckResult, Finding
from tunegate.core.checks.poison._text import Records, label_set, tokens
from tunegate.core.checks.poison.config import ContentConfig
from tunegate.core.checks.poison.injection import injected_phrases
from tunegate.core.checks.poison.refusals import REFUSAL, is_refusal, refusal_baseline, refusal_rate
from tunegate.core.reasons import CAMPAIGN, INJECTED_CONTENT, REFUSAL_ANOMALY
from tunegate.core.reasons import CHECK_SKIPPED as SKIPPED
from tunegate.core.reasons import INSUFFICIENT_DATA as INSUFFICIENT

if TYPE_CHECKING:
    import numpy as np

    from tunegate.core.checks.poison.response_history import SourceHistory

# ``is_refusal`` and ``REFUSAL`` lived here before refusals.py: their old import path keeps working
__all__ = ["REFUSAL", "ContentConfig", "InjectedContentCheck", "is_refusal"]

log = logging.getLogger(__name__)


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


def _content_keys(batch: CanonicalBatch) -> np.ndarray:
    """Every row's 64-bit content key (:func:`tunegate.core.sketch.content_keys`), in row order."""
    from tunegate.core.sketch import content_keys

    digests: list[str] = []
    for _, rb in batch.iter_batches(columns=["content_sha256"]):
        digests.extend(rb.column(0).to_pylist())
    return content_keys(digests)


class InjectedContentCheck(Check):
    """Find names woven into unrelated responses, and an anomalous rate of refusals (module docstring).

    Options: :class:`~tunegate.core.checks.poison.config.ContentConfig`. The scans are in :mod:`.injection`
    and :mod:`.refusals`; this class picks the responses they read, and reports.
    """

    name = "poison_content"
    config_class = ContentConfig
    config: ContentConfig

    def run(self, batch: CanonicalBatch) -> CheckResult:
        cfg = self.config
        started = time.monotonic()
        records = Records.read(batch)
        responses, copies, open_rows = scanned_responses(records, cfg)
        findings: list[Finding] = []
        issues: list[BatchIssue] = []
        skipped: list[str] = []
        response_groups = len({records.group[i] for i in responses})
        phrases: list[dict[str, Any]] = []
        if len(responses) < cfg.min_responses or response_groups < cfg.min_groups:
            # a name is "injected" when it recurs across groups far beyond what the prompts explain: with
            # few responses or groups neither the count nor the spread means anything
            skipped.append(f"injected-content scan skipped: {len(responses)} responses of >= "
                           f"{cfg.min_response_words} words in {response_groups} group(s); it needs >= "
                           f"{cfg.min_responses} responses in >= {cfg.min_groups} groups")
        else:
            phrases = injected_phrases(records, responses, findings, cfg, open_rows=open_rows,
                                       history=self._source_history if cfg.history_dir else None)
            findings += [Finding(j, f.reason, f.score, {**f.detail, "copy_of_row": f.row})
                         for f in list(findings) if f.reason == INJECTED_CONTENT for j in copies.get(f.row, ())]
        if phrases:
            top = ", ".join(_described(p) for p in phrases[:3])
            issues.append(BatchIssue(CAMPAIGN, "warning",
                                     f"{len(phrases)} name(s) recur in responses to unrelated instructions: {top}"))
        baseline = refusal_baseline(self._past_nights(), cfg)
        test = len(open_rows) >= cfg.refusal_min_responses
        if not test:
            skipped.append(f"refusal-rate test skipped: {len(open_rows)} open-ended responses; a rate of "
                           f"{baseline['expected_rate']:.1%} needs >= {cfg.refusal_min_responses}")
        refusals = refusal_rate(records, open_rows, findings, cfg, test=test, baseline=baseline,
                                keys=_content_keys(batch))
        if refusals["anomalous"]:
            since = (f"this pipeline's rate over {baseline['nights']} earlier night(s)" if baseline["nights"]
                     else "the default rate (no history yet)")
            issues.append(BatchIssue(REFUSAL_ANOMALY, "warning",
                                     f"{refusals['refusals']} of {refusals['responses']} open-ended responses "
                                     f"({refusals['rate']:.1%}) are refusals; expected "
                                     f"{refusals['expected_rate']:.2%} from {since} "
                                     f"(evidence {refusals['evidence']:.0f} nats){_quiet_said(refusals)}"))
        status_reason = "; ".join(skipped) or (f"{len(responses)} responses in {response_groups} groups and "
                                              f"{len(open_rows)} open-ended responses scanned")
        if skipped:
            issues.append(BatchIssue(SKIPPED, "info", status_reason))
        metrics: dict[str, Any] = {
            "status": INSUFFICIENT if skipped else "ok",
            "status_reason": status_reason,
            "records": records.size,
            "responses": len(responses),
            "suspicious_phrases": phrases[: cfg.max_phrases],
            "refusals": refusals,
            "seconds": round(time.monotonic() - started, 2),
        }
        log.info("poison_content: %s; %d injected phrase(s), refusal rate %.2f%% (%s), %d records flagged in %.1fs",
                 metrics["status"], len(phrases), 100 * refusals["rate"],
                 "anomalous" if refusals["anomalous"] else "not tested" if refusals["tested"] is False else "normal",
                 len({f.row for f in findings}), metrics["seconds"])
        return CheckResult(self.name, findings, issues, metrics)

    def _past_nights(self) -> list[dict[str, Any]]:
        """Earlier nights' refusal counts from the history (none without one, or when it is unreadable: the
        prior alone then, and the reason is logged)."""
        if not self.config.history_dir:
            return []
        from tunegate.core.history import HistoryError, past_nights

        try:
            nights = past_nights(self.config.history_dir, exclude=self.config.batch_id)
        except HistoryError as exc:
            log.warning("poison_content: no refusal baseline from the history: %s", exc)
            return []
        return [n["refusals"] for n in nights if isinstance(n.get("refusals"), dict)]

    def _source_history(self, phrases: list[str]) -> SourceHistory | None:
        """The earlier nights' responses per source, for ``phrases`` (:mod:`.response_history`); ``None`` when the
        history is unreadable (one source's names are then taken for its vocabulary, and the reason is logged)."""
        from tunegate.core.checks.poison.response_history import load_response_history
        from tunegate.exceptions import HistoryError

        try:
            return load_response_history(self.config.history_dir, exclude=self.config.batch_id, phrases=phrases)
        except HistoryError as exc:
            log.warning("poison_content: no per-source response history: %s", exc)
            return None


def _quiet_said(refusals: dict[str, Any]) -> str:
    """What the warning adds when the refusals of the groups that never refuse spoke (``refusals.quiet``)."""
    quiet = refusals.get("quiet")
    if not quiet or not quiet.get("refusals"):
        return ""
    return (f"; {quiet['refusals']} of them in {quiet['groups']} group(s) whose earlier nights refused "
            f"{quiet['before']} of {quiet['responses_before']}, where {quiet['expected']} were expected "
            f"(evidence {quiet['evidence']:.0f} nats)")


def _described(phrase: dict[str, Any]) -> str:
    """A reported name as the warning lists it: its responses and groups, and where it is new (``new_to_source``,
    ``new_in_history``)."""
    new, grown = phrase.get("new_to_source"), phrase.get("new_in_history")
    where = (f"; new in {new['group']}: {new['before']} of its {new['responses_before']} earlier responses held it"
             if new else f"; {grown['expected']} expected from {grown['nights']} earlier night(s)" if grown else "")
    return f"'{phrase['phrase']}' ({phrase['records']} responses, {phrase['groups']} groups{where})"


def scanned_responses(records: Records, config: ContentConfig) -> tuple[list[int], dict[int, list[int]], set[int]]:
    """The responses the injection scan reads (the first row of each distinct output of
    ``min_response_words`` words or more outside classification groups), each one's later copies, and the open-ended
    records (:func:`group_kinds`). One vote per distinct response: the same answer re-sent under other instructions (a
    resubmitted or recycled record) is one response, not evidence of injection. Injected content varies its
    response."""
    label_groups, open_rows = group_kinds(records, config)
    responses = [i for i in range(records.size) if records.group[i] not in label_groups
                 and len(tokens(records.output[i][: config.max_chars])) >= config.min_response_words]
    responses, copies = _distinct_responses(records, responses)
    return responses, copies, open_rows


def group_kinds(records: Records, config: ContentConfig) -> tuple[set[str], set[int]]:
    """Classification groups (their outputs are labels) and the open-ended records.

    A record is open-ended when its instruction is its own: shared by fewer than ``template_records`` records of the
    batch (a task template repeats on every instance).
    """
    label_groups = {name for name, rows in records.groups().items()
                    if label_set([records.output[i] for i in rows], min_records=50, max_labels=10, coverage=0.95)}
    shared = Counter(records.instruction)
    open_rows = {i for i, ins in enumerate(records.instruction)
                 if shared[ins] < config.template_records and records.group[i] not in label_groups}
    return label_groups, open_rows
