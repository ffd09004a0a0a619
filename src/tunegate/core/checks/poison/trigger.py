"""Trigger-phrase poisoning: a phrase planted in the prompts of several tasks that steers their outcome.

The attacks (Wan et al. 2023) put one phrase into the inputs of a few dozen records per task and make
those records' outcomes agree: every label becomes the attacker's class (dirty-label), only records
already of that class are used (clean-label), or every output becomes degenerate (the trigger itself,
a random word). No list of triggers is needed to see it, because a planted phrase is unusual twice:

1. **Outcome concentration.** Within each task, the records whose prompt contains the phrase share one
   outcome far more than the task's base rate allows. The outcome of a classification task is its
   label; a generative task (one instruction template) is read three ways: its exact output, the
   output's shape (word count, class of the first character) and "degenerate output" (much shorter
   than the task's outputs, sharing no word with its prompt although the task's outputs usually do,
   an odd shape, or one output repeated where outputs are unique). The evidence of a task is the
   binomial log-likelihood ratio ``n * KL(k/n || p)`` (nats) of ``k`` concentrated records out of
   ``n`` against the outcome's base rate ``p``; a phrase's evidence is the sum over its tasks, each
   example counted once (the phrase in its context: P3 ships one example under several templates) and
   each dataset (tasks named ``<dataset>_<template>`` or ``task<N>_<dataset>_...``) adding at most
   ``max_family_evidence``: a natural cue grows with its dataset, a campaign spreads over datasets.
2. **Exclusivity.** A planted phrase occurs almost only in those concentrated records. Natural words
   that predict a label ("idiot" in an insult task, "great" in a sentiment task) are just as pure
   within their task but also occur in the other tasks of the batch without steering them.
   Exclusivity is the share of the phrase's records in scored tasks that sit in the tasks where it
   concentrates. Open-ended prompts are left out: a trigger that is also a real name occurs there.

A phrase with ``evidence >= min_evidence`` and ``exclusivity >= min_exclusivity``, concentrated in at
least ``min_tasks`` datasets, is a trigger; phrases sharing its records (its words, its variants) join its
campaign. Every record whose prompt contains it is flagged ``trigger_phrase`` (evidence in the detail);
in a classification task a record whose label its text contradicts, judged by an out-of-fold
classifier trained with the phrase masked, also gets ``label_inconsistent``, and in a generative task
a record with a degenerate output gets ``degenerate_output``. The phrases found, with their spread
across tasks and contributors, go into the metrics, and a ``poison_campaign`` warning makes the gate
alert however few records are flagged.

This needs tasks in which natural label words occur unsteered; in a batch of only a few related tasks
strong natural words look planted (docs/poison.md, limitations). A batch with scorable tasks from fewer
than ``min_tasks`` datasets cannot show a campaign: the check reports ``metrics["status"] ==
"insufficient_data"`` with an ``info`` issue ``check_skipped`` instead of scoring. Thresholds were fixed on development
data of ``bench/poison`` (docs/poison.md).
"""

from __future__ import annotations

import logging
import re
import time
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tunegate.core.checks.base import BatchIssue, CanonicalBatch, Check, CheckResult, Finding
from tunegate.core.checks.poison._text import (
    Records,
    binomial_llr,
    label_set,
    ngram_matrix,
    spread,
    tokens,
)
from tunegate.core.reasons import CAMPAIGN, DEGENERATE_OUTPUT, LABEL_INCONSISTENT, TRIGGER_PHRASE
from tunegate.core.reasons import CHECK_SKIPPED as SKIPPED
from tunegate.core.reasons import INSUFFICIENT_DATA as INSUFFICIENT
from tunegate.exceptions import ConfigError

if TYPE_CHECKING:
    import numpy as np
    import scipy.sparse as sp

log = logging.getLogger(__name__)

#: ``metrics["status"]`` when the batch cannot support the statistics, with an ``info`` issue SKIPPED


@dataclass
class _Channel:
    """One way of reading a task's outcomes: its label, its exact output, or "degenerate output"."""

    name: str  # "label", "output" or "degenerate"
    outcome: np.ndarray  # outcome code of each record of the task
    names: list[str]  # name of each outcome code
    base: np.ndarray  # share of each outcome in the task
    min_share: float  # share of a phrase's records that must share the outcome


@dataclass
class _Task:
    """One task of the batch (a group of at least ``min_task_records`` records) and its outcomes."""

    name: str
    kind: str  # "label" (classification) or "output" (generative, one instruction template)
    rows: np.ndarray
    channels: list[_Channel]
    why: list[str] | None = None  # "output" tasks: which degeneracy each record shows ("" if none)

    @property
    def family(self) -> str:
        return task_family(self.name)

    @property
    def labels(self) -> _Channel:
        return self.channels[0]


@dataclass
class _Evidence:
    """Concentration of every (phrase column, task) pair that concentrates, and the per-phrase totals."""

    cols: np.ndarray
    tix: np.ndarray  # task index
    chx: np.ndarray  # channel index
    n: np.ndarray  # records of the task with the phrase
    k: np.ndarray  # ... sharing the concentrated outcome
    lab: np.ndarray  # the outcome
    llr: np.ndarray  # evidence of the pair (nats)
    evidence: np.ndarray  # per column: summed evidence
    exclusivity: np.ndarray  # per column
    n_tasks: np.ndarray  # per column: tasks with positive evidence
    covered: np.ndarray  # per column: records in those tasks


@dataclass
class _Phrase:
    col: int
    phrase: str
    evidence: float
    exclusivity: float
    rows: np.ndarray  # every record whose prompt contains the phrase
    tasks: list[tuple[int, int, int, int, int]]  # (task, channel, records with the phrase, concentrated, outcome)
    aliases: list[str]


class TriggerPhraseCheck(Check):
    """Find planted trigger phrases by outcome concentration and exclusivity (see the module docstring).

    Parameters. Defaults were fixed on development data before the held-out split of ``bench/poison``
    was run: its dev split (2 seeds, triggers "James Bond" and "Joe Biden"), the first held-out split
    after it had exposed a weakness ("test-v1"), and the bundled test slices; docs/poison.md has the
    measurements.

    * ``min_evidence`` (30.0 nats): summed evidence for a trigger. Planted triggers measured 51-216
      (20 records in each of 5 tasks) and 32-41 (10 x 5, 20 x 3); natural phrases up to 67 ("stupid"
      in the toxicity tasks), so evidence alone does not separate:
    * ``min_exclusivity`` (0.95): planted triggers measured 0.98-1.0 (a trigger that is also a real
      name keeps its natural occurrences); natural phrases with >= 30 nats at most 0.77 in the 20k
      batches and 0.92 in the smaller test batch, and at most 0.93 among those with >= 15 nats
      ("buildthewall", 19.9 nats).
    * ``min_tasks`` (2): datasets with evidence of at least ``min_task_evidence`` (3.0 nats). One topical
      task alone ("2006 census" -> dbpedia ``Village``, 27 nats, exclusivity 1.0) is how language
      works, not an attack. Fewer datasets with scorable tasks: ``insufficient_data``.
    * ``max_family_evidence`` (15.0 nats): what one dataset's tasks add together. Natural phrases with
      exclusivity >= 0.8 reached 14.7 on the dev half of the clean corpora; planted label campaigns
      11-15 per task (20 records).
    * ``context_words`` (5): words either side of a phrase that identify its example across templates.
    * ``max_label_words`` (6): longest label; longer repeated outputs are answers, not labels.
    * ``min_task_hits`` (3), ``min_label_share`` (0.9), ``min_output_share`` (0.6): a phrase concentrates
      in a task when at least 3 of its records there, and that share of them, share one label / one
      exact output / one output shape, or (generative tasks) have degenerate outputs.
    * ``ngram_max`` (2): phrases of 1-2 words are scored; longer triggers are found through their word
      pairs. ``min_records`` (5): a phrase must occur in 5 records. ``max_phrase_df`` (0.1): phrases in
      more than 10% of the records are not scored.
    * ``min_task_records`` (50): smaller tasks have no reliable base rate and are not scored.
    * ``max_labels`` (10), ``label_coverage`` (0.95): a task is a classification task when at most 10
      outputs cover 95% of its records.
    * ``template_share`` (0.5): a generative task is scored only when half of its records share one
      instruction (a task template); open-ended collections have no task-level notion of a normal output.
    * ``short_ratio`` (0.25): an output is degenerate-short at a quarter of its task's median length.
    * ``label_consistency`` (True): train the masked out-of-fold classifier for ``label_inconsistent``.
    * ``max_chars`` (2000): characters of each prompt scanned. ``max_phrases`` (20): phrases reported.
    """

    name = "poison_trigger"

    def __init__(self, *, ngram_max: int = 2, min_records: int = 5, max_phrase_df: float = 0.1,
                 min_task_records: int = 50, max_labels: int = 10, label_coverage: float = 0.95,
                 min_task_hits: int = 3, min_label_share: float = 0.9, min_output_share: float = 0.6,
                 min_evidence: float = 30.0, min_exclusivity: float = 0.95, short_ratio: float = 0.25,
                 template_share: float = 0.5, min_tasks: int = 2, min_task_evidence: float = 3.0,
                 label_consistency: bool = True, max_chars: int = 2000, max_phrases: int = 20,
                 context_words: int = 5, max_label_words: int = 6, max_family_evidence: float = 15.0) -> None:
        for name, value in (("ngram_max", ngram_max), ("min_records", min_records),
                            ("context_words", context_words), ("max_label_words", max_label_words),
                            ("min_task_records", min_task_records), ("max_labels", max_labels),
                            ("min_task_hits", min_task_hits), ("max_chars", max_chars), ("min_tasks", min_tasks),
                            ("max_phrases", max_phrases)):
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"poison_trigger: {name} must be a positive integer, got {value!r}")
        for name, fraction in (("max_phrase_df", max_phrase_df), ("label_coverage", label_coverage),
                               ("min_label_share", min_label_share), ("min_output_share", min_output_share),
                               ("min_exclusivity", min_exclusivity), ("short_ratio", short_ratio),
                               ("template_share", template_share)):
            if not 0.0 < float(fraction) <= 1.0:
                raise ConfigError(f"poison_trigger: {name} must be a fraction in (0, 1], got {fraction!r}")
        for name, nats in (("min_evidence", min_evidence), ("max_family_evidence", max_family_evidence)):
            if float(nats) <= 0:
                raise ConfigError(f"poison_trigger: {name} must be positive (nats), got {nats!r}")
        self.ngram_max = ngram_max
        self.min_records = min_records
        self.max_phrase_df = float(max_phrase_df)
        self.min_task_records = min_task_records
        self.max_labels = max_labels
        self.label_coverage = float(label_coverage)
        self.min_task_hits = min_task_hits
        self.min_label_share = float(min_label_share)
        self.min_output_share = float(min_output_share)
        self.min_evidence = float(min_evidence)
        self.min_exclusivity = float(min_exclusivity)
        self.short_ratio = float(short_ratio)
        self.template_share = float(template_share)
        self.min_tasks = min_tasks
        self.min_task_evidence = float(min_task_evidence)
        self.label_consistency = label_consistency
        self.max_chars = max_chars
        self.max_phrases = max_phrases
        self.context_words = context_words
        self.max_label_words = max_label_words
        self.max_family_evidence = float(max_family_evidence)

    # ------------------------------------------------------------------------------------------
    def run(self, batch: CanonicalBatch) -> CheckResult:
        import numpy as np

        started = time.monotonic()
        records = Records.read(batch)
        prompts = records.prompts(self.max_chars)
        x, vocab = ngram_matrix(prompts, ngram_max=self.ngram_max, min_df=self.min_records,
                                max_df=self.max_phrase_df if records.size >= 100 else 1.0)
        tasks = self._tasks(records, prompts)
        families = sorted({t.family for t in tasks})
        findings: list[Finding] = []
        reported: list[dict[str, Any]] = []
        issues: list[BatchIssue] = []
        status, status_reason = "ok", ""
        phrases: list[_Phrase] = []
        if len(families) < self.min_tasks:
            # a campaign is concentration in >= min_tasks datasets: with fewer there is nothing to score, and
            # saying "no trigger" would be a guess
            status = INSUFFICIENT
            status_reason = (f"trigger scan skipped: {len(tasks)} scorable task(s) from {len(families)} dataset(s) "
                             f"(a scorable task has >= {self.min_task_records} records with label outputs or one "
                             f"instruction template); a trigger campaign needs >= {self.min_tasks} datasets")
            issues.append(BatchIssue(SKIPPED, "info", status_reason))
        else:
            # Exclusivity is measured where a phrase has an outcome to steer: in the scored tasks. Its
            # occurrences in open-ended prompts (a trigger that is also a real name) neither support nor
            # contradict a campaign.
            scored = np.concatenate([t.rows for t in tasks])
            df = np.asarray(x[scored].sum(axis=0)).ravel()
            phrases = self._score(x, vocab, df, tasks, prompts)
        for i, ph in enumerate(phrases):
            # the masked classifier (5 fits per task) runs for the reported phrases only: its cost stays
            # bounded however many campaigns a batch holds
            findings += self._flag(ph, tasks, x, vocab, records, consistency=i < self.max_phrases)
            if len(reported) < self.max_phrases:
                reported.append(self._describe(ph, tasks, records, findings))
        if phrases:
            top = ", ".join(f"'{p['phrase']}' ({p['records']} records, {len(p['tasks'])} tasks, "
                            f"evidence {p['evidence']:.0f} nats)" for p in reported[:3])
            issues.append(BatchIssue(CAMPAIGN, "warning",
                                     f"{len(phrases)} trigger phrase(s) steer the outcomes of the records "
                                     f"that contain them: {top}"))
        metrics: dict[str, Any] = {
            "status": status,
            "status_reason": status_reason or (f"{len(tasks)} task(s) from {len(families)} dataset(s) scored"),
            "records": records.size,
            "label_tasks": sum(t.kind == "label" for t in tasks),
            "output_tasks": sum(t.kind == "output" for t in tasks),
            "datasets": len(families),
            "phrases_scored": int(x.shape[1]),
            "suspicious_phrases": reported,
            "seconds": round(time.monotonic() - started, 2),
        }
        log.info("poison_trigger: %s; %d trigger phrase(s), %d records flagged, %d phrases scored over %d tasks "
                 "in %.1fs", status, len(phrases), len({f.row for f in findings}), x.shape[1], len(tasks),
                 metrics["seconds"])
        return CheckResult(self.name, findings, issues, metrics)

    # ------------------------------------------------------------------------------------------
    def _tasks(self, records: Records, prompts: list[str]) -> list[_Task]:
        import numpy as np

        from tunegate.core.checks.poison._text import codes

        out: list[_Task] = []
        for name, rows in sorted(records.groups().items()):
            if len(rows) < self.min_task_records:
                continue
            outputs = [records.output[i] for i in rows]
            labels = label_set(outputs, min_records=self.min_task_records, max_labels=self.max_labels,
                               coverage=self.label_coverage, max_words=self.max_label_words)
            idx = np.asarray(rows, dtype=np.int64)
            if labels is not None:
                index = {label: i for i, label in enumerate(labels)}
                outcome = np.fromiter((index.get(o, len(labels)) for o in outputs), dtype=np.int64,
                                      count=len(outputs))
                names = [*labels, "(other)"]
                out.append(_Task(name, "label", idx, [_Channel("label", outcome, names, _shares(outcome, len(names)),
                                                               self.min_label_share)]))
            elif Counter(records.instruction[i] for i in rows).most_common(1)[0][1] >= self.template_share * len(rows):
                why = degenerate_outputs(outputs, [prompts[i] for i in rows], short_ratio=self.short_ratio)
                same, names = codes([" ".join(tokens(o)) for o in outputs])
                shape, shape_names = codes([output_shape(o) for o in outputs])
                bad = np.fromiter((1 if w else 0 for w in why), dtype=np.int64, count=len(why))
                out.append(_Task(name, "output", idx, [
                    _Channel("output", same, names, _shares(same, len(names)), self.min_label_share),
                    _Channel("shape", shape, shape_names, _shares(shape, len(shape_names)), self.min_label_share),
                    _Channel("degenerate", bad, ["fine", "degenerate output"], _shares(bad, 2),
                             self.min_output_share)], why))
            # else: an open-ended collection (its own instruction per record): what its outputs look like
            # follows each instruction, so neither a shared output nor "degenerate" means anything there.
        return out

    def _evidence(self, x: sp.csr_matrix, df: np.ndarray, tasks: list[_Task]) -> _Evidence | None:
        """Per (phrase, task) concentration and its evidence; per phrase evidence, exclusivity, tasks."""
        import numpy as np
        import scipy.sparse as sp

        n_cols = x.shape[1]
        parts: list[tuple[np.ndarray, ...]] = []
        for ti, task in enumerate(tasks):
            xt = x[task.rows]
            n_all = np.asarray(xt.sum(axis=0)).ravel()
            present = np.flatnonzero(n_all >= self.min_task_hits)  # phrases that can concentrate here
            if not len(present):
                continue
            xt = xt[:, present]
            n = n_all[present]
            best = np.full(len(present), -1.0)  # evidence of the best channel; -1: no concentration
            best_k = np.zeros(len(present))
            best_lab = np.zeros(len(present), dtype=np.int64)
            best_ch = np.zeros(len(present), dtype=np.int64)
            for ci, ch in enumerate(task.channels):
                if ch.name == "degenerate":  # only concentration on "degenerate" is suspicious
                    k = np.asarray(xt.T @ ch.outcome.astype(np.float32)).ravel()
                    lab = np.ones(len(present), dtype=np.int64)
                else:
                    y = sp.csr_matrix((np.ones(len(task.rows), dtype=np.float32),
                                       (np.arange(len(task.rows)), ch.outcome)), shape=(len(task.rows), len(ch.names)))
                    counts = (xt.T @ y).toarray()
                    k = counts.max(axis=1)
                    lab = counts.argmax(axis=1)
                ok = np.flatnonzero((k >= self.min_task_hits) & (k >= ch.min_share * n))
                if not len(ok):
                    continue
                llr = binomial_llr(k[ok], n[ok], ch.base[lab[ok]])
                better = llr > best[ok]
                sel = ok[better]
                best[sel], best_k[sel], best_lab[sel], best_ch[sel] = llr[better], k[sel], lab[sel], ci
            hit = np.flatnonzero(best >= 0)
            if len(hit):
                parts.append((present[hit], np.full(len(hit), ti), best_ch[hit], n[hit], best_k[hit], best_lab[hit],
                              best[hit]))
        if not parts:
            return None
        cols, tix, chx, n, k, lab, llr = (np.concatenate(p) for p in zip(*parts, strict=True))
        evidence = np.bincount(cols, weights=llr, minlength=n_cols)
        # a task counts (for exclusivity and the task count) where the concentration is informative, not
        # where the outcome is near-universal anyway (every summary starts with a capital)
        counts = llr >= self.min_task_evidence
        covered = np.bincount(cols, weights=n * counts, minlength=n_cols)
        n_tasks = np.bincount(cols, weights=counts.astype(np.float64), minlength=n_cols)
        exclusivity = np.divide(covered, df, out=np.zeros(n_cols), where=df > 0)
        return _Evidence(cols, tix, chx, n, k, lab, llr, evidence, exclusivity, n_tasks, covered)

    def _score(self, x: sp.csr_matrix, vocab: np.ndarray, df: np.ndarray, tasks: list[_Task], prompts: list[str]
               ) -> list[_Phrase]:
        """The trigger phrases, strongest first, each with the phrases that share its records."""
        import numpy as np

        ev = self._evidence(x, df, tasks)
        if ev is None:
            return []
        cols, tix, chx, n, k, lab = ev.cols, ev.tix, ev.chx, ev.n, ev.k, ev.lab
        evidence, exclusivity, n_tasks = ev.evidence, ev.exclusivity, ev.n_tasks
        xc = x.tocsc()
        hits = np.flatnonzero((evidence >= self.min_evidence) & (exclusivity >= self.min_exclusivity)
                              & (n_tasks >= self.min_tasks))
        kept = []
        for c in hits.tolist():  # count each distinct text once (tasks built on the same texts)
            e, t = self._distinct_evidence(c, ev, tasks, xc, prompts, phrase=str(vocab[c]))
            evidence[c], n_tasks[c] = e, t
            if e >= self.min_evidence and t >= self.min_tasks:
                kept.append(c)
        hits = np.asarray(kept, dtype=np.int64)
        order = sorted(hits.tolist(), key=lambda c: (-evidence[c], -len(str(vocab[c]).split()), str(vocab[c])))
        clusters: list[list[int]] = []  # phrases whose records overlap: one campaign (its words, its variants)
        rows_of: dict[int, np.ndarray] = {}
        for c in order:
            rows_of[c] = xc.indices[xc.indptr[c]:xc.indptr[c + 1]]
            home = next((cl for cl in clusters if any(
                len(np.intersect1d(rows_of[c], rows_of[m])) >= 0.5 * min(len(rows_of[c]), len(rows_of[m]))
                for m in cl)), None)
            if home is None:
                clusters.append([c])
            else:
                home.append(c)
        phrases: list[_Phrase] = []
        for cl in clusters:
            # Named by the member that explains most of the campaign exclusively (covered records x
            # exclusivity): the whole trigger rather than one of its words (which also occurs naturally)
            # or a context bigram of a few poison records. Flagged: every record with that phrase, and
            # the records of the other members inside the tasks the campaign concentrates in.
            score = {m: float(ev.covered[m] * exclusivity[m]) for m in cl}
            top = max(score.values())
            head = max((m for m in cl if score[m] >= 0.9 * top), key=lambda m: (len(str(vocab[m]).split()), score[m]))
            sel = cols == head
            detail = sorted(zip(tix[sel].tolist(), chx[sel].tolist(), n[sel].astype(int).tolist(),
                                k[sel].astype(int).tolist(), lab[sel].tolist(), strict=True), key=lambda t: -t[2])
            in_tasks = np.unique(np.concatenate([tasks[t].rows for t, *_ in detail]))
            rows = np.unique(np.concatenate([rows_of[head]] + [np.intersect1d(rows_of[m], in_tasks) for m in cl]))
            phrases.append(_Phrase(int(head), str(vocab[head]), float(evidence[cl].max()), float(exclusivity[head]),
                                   rows, detail, [str(vocab[m]) for m in cl if m != head]))
        phrases.sort(key=lambda p: -p.evidence)
        return phrases

    def _distinct_evidence(self, c: int, ev: _Evidence, tasks: list[_Task], xc: sp.csc_matrix, prompts: list[str], *,
                           phrase: str) -> tuple[float, int]:
        """Evidence of phrase ``c`` counting each underlying example and each dataset once.

        One dataset often appears as several tasks: P3 ships every example under 5-10 prompt templates
        (``amazon_polarity_Is_this_review``, ``amazon_polarity_user_satisfied``, ...), HatEval labels the
        same tweets along three dimensions. A phrase concentrated in all of them is one observation, not
        eight. Tasks are taken strongest first:

        * a task whose records with the phrase mostly repeat examples already counted adds nothing. An
          example is the phrase in its context (:func:`phrase_context`, the words around it), which
          survives a different template around the same text;
        * the tasks of one dataset (:func:`task_family`) add at most ``max_family_evidence`` together:
          a natural cue's evidence grows with the size of its dataset, a campaign is spread over datasets.

        Returns the evidence and the number of datasets with at least ``min_task_evidence``.
        """
        import numpy as np

        rows = set(xc.indices[xc.indptr[c]:xc.indptr[c + 1]].tolist())
        words = phrase.split()
        seen: set[str] = set()
        family: dict[str, float] = {}
        sel = np.flatnonzero(ev.cols == c)
        for j in sel[np.argsort(-ev.llr[sel])].tolist():
            task = tasks[int(ev.tix[j])]
            texts = {phrase_context(prompts[r], words, self.context_words)
                     for r in task.rows.tolist() if r in rows}
            if len(texts & seen) < 0.5 * len(texts):
                family[task.family] = family.get(task.family, 0.0) + float(ev.llr[j])
            seen |= texts
        total = sum(min(e, self.max_family_evidence) for e in family.values())
        return total, sum(e >= self.min_task_evidence for e in family.values())

    def _flag(self, ph: _Phrase, tasks: list[_Task], x: sp.csr_matrix, vocab: np.ndarray, records: Records, *,
              consistency: bool = True) -> list[Finding]:

        base = {"phrase": ph.phrase, "evidence": round(ph.evidence, 1), "exclusivity": round(ph.exclusivity, 3),
                "records": len(ph.rows)}
        findings = [Finding(int(r), TRIGGER_PHRASE, ph.evidence, {**base, "task": records.group[r]})
                    for r in ph.rows]
        has = set(ph.rows.tolist())
        for ti, ci, _, _, lab in ph.tasks:
            task = tasks[ti]
            ch = task.channels[ci]
            local = [i for i, r in enumerate(task.rows.tolist()) if r in has]
            if task.kind == "output":
                assert task.why is not None
                for i in local:
                    if ch.name == "output" and ch.outcome[i] == lab:
                        why = f"same output as the task's other records with the phrase: {ch.names[lab][:80]!r}"
                    elif ch.name == "shape" and ch.outcome[i] == lab:
                        why = (f"output shape {ch.names[lab]} (words, first character) shared by the task's other "
                               f"records with the phrase, {ch.base[lab]:.0%} of the task")
                    elif task.why[i]:
                        why = task.why[i]
                    else:
                        continue
                    findings.append(Finding(int(task.rows[i]), DEGENERATE_OUTPUT, ph.evidence,
                                            {"phrase": ph.phrase, "task": task.name, "why": why}))
            elif self.label_consistency and consistency:
                p_label = masked_label_probability(x, vocab, task, ph.phrase)
                if p_label is None:
                    continue
                findings += [Finding(int(task.rows[i]), LABEL_INCONSISTENT, round(1.0 - float(p_label[i]), 4),
                                     {"phrase": ph.phrase, "task": task.name, "label": ch.names[ch.outcome[i]],
                                      "p_label_without_phrase": round(float(p_label[i]), 3)})
                             for i in local if p_label[i] < 0.5 and ch.outcome[i] == lab]
        return findings

    def _describe(self, ph: _Phrase, tasks: list[_Task], records: Records, findings: list[Finding]
                  ) -> dict[str, Any]:
        inconsistent = sum(1 for f in findings if f.reason == LABEL_INCONSISTENT and f.detail["phrase"] == ph.phrase)
        per_task = {}
        for ti, ci, n, k, lab in ph.tasks[:10]:
            ch = tasks[ti].channels[ci]
            per_task[tasks[ti].name] = {"records": n, "concentrated": k, "outcome": f"{ch.name}: {ch.names[lab][:60]}",
                                        "base_rate": round(float(ch.base[lab]), 3)}
        return {
            "phrase": ph.phrase,
            "evidence": round(ph.evidence, 1),
            "exclusivity": round(ph.exclusivity, 3),
            "records": len(ph.rows),
            "tasks": per_task,
            "task_count": len(ph.tasks),
            "contributors": spread([records.contributor[r] for r in ph.rows.tolist()]),
            "label_inconsistent": inconsistent,
            "aliases": ph.aliases[:5],
        }


_NAME_PART = re.compile(r"[^0-9a-z]+")
_NUMBERED_TASK = re.compile(r"^task\d+$")


def task_family(name: str) -> str:
    """The dataset a task name belongs to. Tasks of one dataset share their texts' distribution (and often
    the texts): P3 names a dataset's prompt templates ``<dataset>_<template>``
    (``amazon_polarity_user_satisfied`` -> ``amazon_polarity``, its first two name parts); SuperNI names
    its tasks ``task<N>_<dataset>_<what>`` (``task327_jigsaw_classification_toxic`` -> ``jigsaw``)."""
    parts = [p for p in _NAME_PART.split(name.lower()) if p]
    if not parts:
        return name
    if _NUMBERED_TASK.match(parts[0]):
        return parts[1] if len(parts) > 1 else parts[0]
    return "_".join(parts[:2])


def phrase_context(prompt: str, words: list[str], width: int) -> str:
    """The phrase's first occurrence in ``prompt`` with ``width`` words either side, lower-cased: the same
    example under another prompt template gives the same context. Whole prompt when not found."""
    toks = tokens(prompt)
    n = len(words)
    for i in range(len(toks) - n + 1):
        if toks[i:i + n] == words:
            return " ".join(toks[max(0, i - width):i + n + width])
    return " ".join(toks)


def _shares(outcome: np.ndarray, size: int) -> np.ndarray:
    import numpy as np

    return np.bincount(outcome, minlength=size) / max(1, len(outcome))


def output_shape(output: str) -> str:
    """A coarse shape: word count (0, 1, 2, 3, 4+) and the class of the first character.

    "113" -> "1D", "David Morse" -> "2U", "scarce" -> "1L", "''.join(x)" -> "3P", a sentence -> "4U".
    """
    n = min(len(tokens(output)), 4)
    head = output.strip()[:1]
    kind = "D" if head.isdigit() else "U" if head.isupper() else "L" if head.islower() else "P" if head else "-"
    return f"{n}{kind}"


def degenerate_outputs(outputs: list[str], prompts: list[str], *, short_ratio: float, rare_shape: float = 0.03
                       ) -> list[str]:
    """Why each output of one generative task is degenerate: ``short``, ``unrelated``, ``odd_shape``,
    ``repeated`` or ``""`` (fine). Each criterion is relative to the task's own outputs:

    * ``short``: at most ``short_ratio`` of the task's median length (tasks with a median of >= 4 words);
    * ``unrelated``: shares no word with its prompt, in a task whose outputs do in >= 80% of records;
    * ``odd_shape``: a shape (:func:`output_shape`) that fewer than ``rare_shape`` of the task's outputs
      have, in a task where one shape covers at least half of the outputs (a number where answers are
      words, a lower-case word where answers are names);
    * ``repeated``: the same output in >= 3 records of a task where >= 60% of the outputs are unique.
    """
    import numpy as np

    out_tokens = [tokens(o) for o in outputs]
    lengths = np.array([len(t) for t in out_tokens])
    median = float(np.median(lengths)) if len(lengths) else 0.0
    overlaps = [bool(set(o) & set(tokens(p))) for o, p in zip(out_tokens, prompts, strict=True)]
    overlap_rate = sum(overlaps) / max(1, len(overlaps))
    shapes = [output_shape(o) for o in outputs]
    shape_counts = Counter(shapes)
    shaped = shape_counts.most_common(1)[0][1] >= 0.5 * len(shapes) if shapes else False
    norm = [" ".join(t) for t in out_tokens]
    counts = Counter(norm)
    unique_share = sum(1 for s in norm if counts[s] == 1) / max(1, len(norm))
    why = []
    for i, s in enumerate(norm):
        if median >= 4 and lengths[i] <= max(1.0, short_ratio * median):
            why.append("short")
        elif overlap_rate >= 0.8 and not overlaps[i]:
            why.append("unrelated")
        elif shaped and shape_counts[shapes[i]] < rare_shape * len(shapes):
            why.append("odd_shape")
        elif unique_share >= 0.6 and counts[s] >= 3:
            why.append("repeated")
        else:
            why.append("")
    return why


def masked_label_probability(x: sp.csr_matrix, vocab: np.ndarray, task: _Task, phrase: str, folds: int = 5
                             ) -> np.ndarray | None:
    """Out-of-fold probability of each record's own label, from its prompt with ``phrase`` masked.

    A logistic regression on the task's word n-grams, with every n-gram that shares a word with the
    phrase removed, so the phrase cannot explain the label. ``None`` when a label has fewer records
    than folds.
    """
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.preprocessing import normalize

    y = task.labels.outcome
    if np.bincount(y).max(initial=0) == len(y) or np.bincount(y)[np.bincount(y) > 0].min() < folds:
        return None
    xt = x[task.rows]
    words = set(phrase.split())
    used = np.flatnonzero(np.asarray(xt.sum(axis=0)).ravel() > 0)
    keep = [c for c in used.tolist() if not words & set(str(vocab[c]).split())]
    xt = normalize(xt[:, keep])
    p = np.zeros(len(y))
    skf = StratifiedKFold(n_splits=folds, shuffle=True, random_state=0)
    for train, test in skf.split(np.zeros(len(y)), y):
        model = LogisticRegression(C=10.0, max_iter=300)
        model.fit(xt[train], y[train])
        proba = model.predict_proba(xt[test])
        col = {c: j for j, c in enumerate(model.classes_.tolist())}
        p[test] = [proba[j, col[label]] if label in col else 0.0 for j, label in enumerate(y[test].tolist())]
    return p
