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
   concentrates. Open-ended prompts are left out: a trigger that is also a real name occurs there; so is a task
   where the phrase's records share an outcome the task gives too often for that to be evidence either way.

A phrase with ``evidence >= min_evidence`` and ``exclusivity >= min_exclusivity``, concentrated in at
least ``min_tasks`` datasets, is a trigger; phrases sharing its records (its words, its variants) join its
campaign. Every record whose prompt contains it is flagged ``trigger_phrase`` (evidence in the detail);
in a classification task a record whose label its text contradicts, judged by a classifier trained on
the task's other records with the phrase masked, also gets ``label_inconsistent``, and in a generative task
a record with a degenerate output gets ``degenerate_output``. The phrases found, with their spread
across tasks and contributors, go into the metrics, and a ``poison_campaign`` warning makes the gate
alert however few records are flagged.

An everyday phrase planted as a trigger ("of my": hundreds of natural records with mixed labels) is neither
concentrated nor exclusive; the insertion pass (:mod:`.insertion_pass`, ``insertion``) finds it through the labels of
its *out-of-place* occurrences (:mod:`.insertion`: where its neighbours read as one text without it). With a history,
a campaign run in one dataset (an upstream dataset poisoned) is read too: the excess and contradiction passes test the
phrases held by one dataset as a family of their own (docs/poison.md, *A campaign in one dataset*). Without one, the
pooled pass's candidates that no pass raised are tested by the contradiction of their records' labels
(:mod:`.cue_pass`): a dirty-label campaign whose trigger is also a word of the batch.

This needs tasks in which natural label words occur unsteered; in a batch of only a few related tasks
strong natural words look planted (docs/poison.md, limitations). A batch with scorable tasks from fewer
than ``min_tasks`` datasets cannot show a campaign: the check reports ``metrics["status"] ==
"insufficient_data"`` with an ``info`` issue ``check_skipped`` instead of scoring. Thresholds were fixed on development
data of ``bench/poison`` (docs/poison.md).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tunegate.core.checks.base import BatchIssue, CanonicalBatch, Check, CheckResult, Finding
from tunegate.core.checks.poison._ngrams import WordStats
from tunegate.core.checks.poison._text import Records, counted, ngram_matrix, spread
from tunegate.core.checks.poison.breadth_pass import broad_phrases
from tunegate.core.checks.poison.config import TriggerConfig
from tunegate.core.checks.poison.consistency import masked_label_probability
from tunegate.core.checks.poison.contradiction_pass import contradicted_tasks, contradiction_phrases
from tunegate.core.checks.poison.cue_pass import contradicted_cues
from tunegate.core.checks.poison.evidence import concentration, phrase_context
from tunegate.core.checks.poison.excess_pass import excess_phrases
from tunegate.core.checks.poison.insertion_pass import insertion_phrases, out_of_place
from tunegate.core.checks.poison.novelty_pass import known_counts, label_statistics, novelty_phrases
from tunegate.core.checks.poison.phrase_history import PhraseHistory, load_phrase_history
from tunegate.core.checks.poison.phrases import Phrase, find_phrases
from tunegate.core.checks.poison.tasks import (
    Task,
    build_tasks,
    degenerate_outputs,
    open_ended_tasks,
    output_shape,
    task_family,
    unprompted_campaign,
)
from tunegate.core.reasons import CAMPAIGN, DEGENERATE_OUTPUT, LABEL_INCONSISTENT, TRIGGER_PHRASE
from tunegate.core.reasons import CHECK_SKIPPED as SKIPPED
from tunegate.core.reasons import INSUFFICIENT_DATA as INSUFFICIENT

if TYPE_CHECKING:
    import numpy as np
    import scipy.sparse as sp

    from tunegate.core.checks.poison.evidence import Evidence
    from tunegate.core.checks.poison.novelty import TaskHistory

# the helpers' former home: ``from tunegate.core.checks.poison.trigger import task_family`` keeps working
__all__ = ["TriggerConfig", "TriggerPhraseCheck", "degenerate_outputs", "masked_label_probability", "output_shape",
           "phrase_context", "task_family"]

log = logging.getLogger(__name__)


@dataclass
class _Pooled:
    """What the pooled pass leaves for :meth:`TriggerPhraseCheck._cues`: its concentration over the classification
    tasks, their positions among the scored tasks and its relaxed thresholds."""

    evidence: Evidence
    index: list[int]
    config: TriggerConfig


class TriggerPhraseCheck(Check):
    """Find planted trigger phrases by outcome concentration and exclusivity (see the module docstring).

    Options: :class:`~tunegate.core.checks.poison.config.TriggerConfig` (each with the measurement that
    fixed its default). The work is done by :mod:`.tasks` (tasks and their outcomes), :mod:`.evidence`
    (concentration, exclusivity), :mod:`.phrases` (campaigns and their names) and :mod:`.consistency`
    (the masked classifier); this class flags records and reports.
    """

    name = "poison_trigger"
    config_class = TriggerConfig
    config: TriggerConfig

    def run(self, batch: CanonicalBatch) -> CheckResult:
        import numpy as np

        cfg = self.config
        started = time.monotonic()
        records = Records.read(batch)
        prompts = records.prompts(cfg.max_chars)
        stats = WordStats() if cfg.insertion else None
        x, vocab = ngram_matrix(prompts, ngram_max=cfg.ngram_max, min_df=cfg.min_records,
                                max_df=cfg.max_phrase_df if records.size >= 100 else 1.0, stats=stats)
        tasks = build_tasks(records, prompts, cfg)
        # the open-ended collections, read for degenerate answers by the degenerate pass alone
        open_tasks = open_ended_tasks(records, tasks, cfg) if cfg.degenerate else []
        every = [*tasks, *open_tasks]  # what the phrases' task indices point into (the other passes read ``tasks``)
        records.release_text()  # from here on the scan reads prompts, tasks and groups only
        families = sorted({t.family for t in tasks})
        findings: list[Finding] = []
        reported: list[dict[str, Any]] = []
        issues: list[BatchIssue] = []
        status, status_reason = "ok", ""
        phrases: list[Phrase] = []
        novelty_metrics: dict[str, Any] = {}
        insertion_metrics: dict[str, Any] = {}
        contradiction_metrics: dict[str, Any] = {}
        excess_metrics: dict[str, Any] = {}
        breadth_metrics: dict[str, Any] = {}
        degenerate_metrics: dict[str, Any] = {}
        cue_metrics: dict[str, Any] = {}
        if len(families) < cfg.min_tasks:
            # a campaign is concentration in >= min_tasks datasets: with fewer there is nothing to score, and
            # saying "no trigger" would be a guess
            status = INSUFFICIENT
            status_reason = (f"trigger scan skipped: {len(tasks)} scorable task(s) from {len(families)} dataset(s) "
                             f"(a scorable task has >= {cfg.min_task_records} records with label outputs or one "
                             f"instruction template); a trigger campaign needs >= {cfg.min_tasks} datasets")
        else:
            # Exclusivity is measured where a phrase has an outcome to steer: in the scored tasks. Its
            # occurrences in open-ended prompts (a trigger that is also a real name) neither support nor
            # contradict a campaign.
            in_scored = np.zeros(x.shape[0], dtype=np.float32)
            in_scored[np.concatenate([t.rows for t in tasks])] = 1.0
            df = np.rint(np.asarray(x.T @ in_scored)).ravel()  # rows of scored tasks, without copying them
            history, past = self._history(tasks, vocab, novelty_metrics)
            phrases = find_phrases(x, vocab, df, tasks, prompts=prompts, config=cfg, history=history)
            pooled = None
            if cfg.pooled:
                raised, pooled = self._pooled(x, vocab, tasks, prompts=prompts, found=phrases, history=history)
                phrases += raised
            if cfg.degenerate:
                began = time.monotonic()
                degenerate = self._degenerate(x, vocab, tasks, "output", prompts=prompts, found=phrases)
                phrases += degenerate
                degenerate_metrics = {"phrases": [p.phrase for p in degenerate],  # its tasks: metrics.output_tasks
                                      "seconds": round(time.monotonic() - began, 2)}
            placement = None  # the insertion test's verdicts: the insertion pass and the excess pass read them
            if stats is not None and stats.words is not None:
                placement, figures = out_of_place(x, vocab, tasks, prompts=prompts, stats=stats, config=cfg)
                insertion_metrics.update(figures)
                found: list[Phrase] = []
                if placement is not None:
                    found, figures = insertion_phrases(x, vocab, tasks, placement=placement, config=cfg,
                                                       found=phrases)
                    insertion_metrics.update(figures)
                phrases += found
                insertion_metrics.update(phrases=[p.phrase for p in found])
            stats = None  # the word statistics are only needed by the insertion test
            xh = _without_blind(x, vocab, past, novelty_metrics)  # what the history passes read
            # tonight's label counts in the tasks the history knows: what the three history passes test
            known = known_counts(xh, tasks, history, cfg) if history is not None and (
                cfg.novelty or cfg.contradiction or cfg.excess) else None
            label_stats = label_statistics(xh, tasks, history, cfg, known=known) if history is not None and (
                cfg.novelty or cfg.contradiction or cfg.breadth) else None
            if cfg.novelty and history is not None:
                found, figures = novelty_phrases(xh, vocab, tasks, history, cfg, found=phrases, stats=label_stats)
                phrases += found
                novelty_metrics.update(figures, found=[p.phrase for p in found])
            if cfg.contradiction and label_stats is not None:
                assert history is not None
                found, figures = contradiction_phrases(xh, vocab, tasks, label_stats, cfg, found=phrases,
                                                       history=history)
                phrases += found
                contradiction_metrics.update(figures, phrases=[p.phrase for p in found])
            if cfg.excess and history is not None:
                assert past is not None
                found, figures = excess_phrases(xh, vocab, tasks, history, cfg, hidden=past.hidden(vocab),
                                                truncated=past.truncated, found=phrases, known=known,
                                                placement=placement if cfg.excess_placement else None)
                phrases += found
                excess_metrics.update(figures, phrases=[p.phrase for p in found])
            if cfg.breadth and label_stats is not None:
                assert history is not None
                found, figures = broad_phrases(xh, vocab, tasks, label_stats, cfg, history=history,
                                               found=phrases)
                phrases += found
                breadth_metrics.update(figures, phrases=[p.phrase for p in found])
            if cfg.contradiction and pooled is not None and history is None:
                # without a history: the contradiction, excess and breadth passes read nothing (:mod:`.cue_pass`)
                phrases += self._cues(pooled, x, vocab, tasks, prompts=prompts, found=phrases, metrics=cue_metrics)
            if cfg.contradiction and history is not None and phrases:
                # a raised campaign's tasks where its phrase is common on the target label: its relabelled records
                # read as another label there (and, in its own tasks, the records it left on its label)
                joined, extended = contradicted_tasks(phrases, xh, vocab, tasks, history,
                                                      min_known=cfg.min_task_records)
                contradiction_metrics.update(joined_tasks=joined, extended_tasks=extended)
        if cfg.degenerate:
            # degenerate answers in the open-ended collections: read whether or not the batch has tasks to score (a
            # batch of Alpaca-style data has none), and last, since the passes above read the scored tasks by index
            began = time.monotonic()
            answers = self._degenerate(x, vocab, every, "open", prompts=prompts, found=phrases)
            phrases += answers
            degenerate_metrics = {**degenerate_metrics, "open_collections": len(open_tasks),
                                  "open_phrases": [p.phrase for p in answers],
                                  "seconds": round(degenerate_metrics.get("seconds", 0.0) + time.monotonic() - began,
                                                   2)}
            if status == INSUFFICIENT and len(open_tasks) >= cfg.min_tasks:
                status_reason += f"; {counted(len(open_tasks), 'open-ended collection')} read for degenerate answers"
        if status == INSUFFICIENT:
            issues.append(BatchIssue(SKIPPED, "info", status_reason))
        for i, ph in enumerate(phrases):
            # the masked classifier (5 fits per task) runs for the reported phrases only: its cost stays
            # bounded however many campaigns a batch holds
            findings += self._flag(ph, every, x, vocab, records, consistency=i < cfg.max_phrases)
            if len(reported) < cfg.max_phrases:
                reported.append(self._describe(ph, every, records, findings))
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
            **({"degenerate": degenerate_metrics} if degenerate_metrics else {}),
            **({"history": novelty_metrics} if novelty_metrics else {}),
            **({"insertion": insertion_metrics} if insertion_metrics else {}),
            **({"contradiction": contradiction_metrics} if contradiction_metrics else {}),
            **({"excess": excess_metrics} if excess_metrics else {}),
            **({"breadth": breadth_metrics} if breadth_metrics else {}),
            **({"cues": cue_metrics} if cue_metrics else {}),
            "suspicious_phrases": reported,
            "seconds": round(time.monotonic() - started, 2),
        }
        log.info("poison_trigger: %s; %d trigger phrase(s), %d records flagged, %d phrases scored over %d tasks "
                 "in %.1fs", status, len(phrases), len({f.row for f in findings}), x.shape[1], len(tasks),
                 metrics["seconds"])
        return CheckResult(self.name, findings, issues, metrics)

    def _history(self, tasks: list[Task], vocab: np.ndarray, metrics: dict[str, Any]
                 ) -> tuple[list[TaskHistory | None] | None, PhraseHistory | None]:
        """Per task, what earlier nights' phrase statistics expect (:mod:`.phrase_history`), and those statistics;
        ``None`` without a history or before its first night (the check then behaves exactly as without one)."""
        cfg = self.config
        if cfg.history_dir is None:
            return None, None
        past = load_phrase_history(cfg.history_dir, exclude=cfg.batch_id, max_nights=cfg.history_nights, vocab=vocab)
        if not past.nights:
            metrics["nights"] = 0
            return None, None
        per_task = past.for_tasks(tasks, vocab)
        metrics.update(nights=len(past.nights), tasks_seen=sum(h is not None for h in per_task))
        return per_task, past

    def _pooled(self, x: sp.csr_matrix, vocab: np.ndarray, tasks: list[Task], *, prompts: list[str],
                found: list[Phrase], history: list[TaskHistory | None] | None = None
                ) -> tuple[list[Phrase], _Pooled | None]:
        """Small, spread campaigns (a few records in each of many classification tasks): the same scoring
        with per-task thresholds relaxed (2 records, 80% on one label, 1 nat) and the campaign thresholds
        ``pooled_*``: more datasets instead of more evidence per dataset. A phrase's exclusivity is measured among
        its records *in classification tasks*, the only ones this pass reads (as the degenerate pass reads its own
        among the generative tasks): a trigger that is also a word of articles to summarise ("cf." in scientific
        abstracts) no longer loses its campaign to records that have no label to steer. Flagged: the campaign's
        records in classification tasks; its records elsewhere, which the exclusivity did not read, are not.
        Campaigns already found are not repeated. Returns the campaigns and what :meth:`_cues` reads later (``None``
        without classification tasks or a phrase that concentrates)."""
        import dataclasses

        import numpy as np

        cfg = self.config
        index = [i for i, t in enumerate(tasks) if t.kind == "label"]
        if not index:
            return [], None
        in_label = np.zeros(x.shape[0], dtype=np.float32)
        in_label[np.concatenate([tasks[i].rows for i in index])] = 1.0
        df = np.rint(np.asarray(x.T @ in_label)).ravel()  # the phrase's records in classification tasks
        relaxed = dataclasses.replace(cfg, min_task_hits=2, min_label_share=0.8, min_task_evidence=1.0,
                                      min_evidence=cfg.pooled_min_evidence,
                                      min_exclusivity=cfg.pooled_min_exclusivity, min_tasks=cfg.pooled_min_datasets)
        taken = np.concatenate([p.rows for p in found]) if found else np.array([], dtype=np.int64)
        out: list[Phrase] = []
        sub = [history[i] for i in index] if history is not None else None
        label_tasks = [tasks[i] for i in index]
        ev = concentration(x, df, label_tasks, relaxed, sub)
        if ev is None:
            return out, None
        for ph in find_phrases(x, vocab, df, label_tasks, prompts=prompts, config=relaxed, history=sub, evidence=ev):
            ph.rows = ph.rows[in_label[ph.rows] > 0]
            if not len(ph.rows) or len(np.intersect1d(ph.rows, taken)) >= 0.5 * len(ph.rows):
                continue
            out.append(ph)
        for ph in out:
            ph.tasks = [(index[ti], ci, n, k, lab) for ti, ci, n, k, lab in ph.tasks]
        return out, _Pooled(ev, index, relaxed)

    def _cues(self, pooled: _Pooled, x: sp.csr_matrix, vocab: np.ndarray, tasks: list[Task], *, prompts: list[str],
              found: list[Phrase], metrics: dict[str, Any]) -> list[Phrase]:
        """The pooled pass's candidates that no pass raised whose records contradict their labels (:mod:`.cue_pass`),
        read last: a campaign another pass raised keeps that pass's flags, and this step adds only what none found.
        Without a history only (the caller's test): with one, the contradiction pass reads the dirty-label campaigns of
        new and bursting vocabulary, and this step found nothing more on dev or held-out nights but raised a natural
        phrase on a held-out clean batch (bench/poison/RESULTS.md 6aw)."""
        cfg = self.config
        began = time.monotonic()
        label_tasks = [tasks[i] for i in pooled.index]
        cues, figures = contradicted_cues(x, vocab, pooled.evidence, label_tasks, prompts=prompts, config=pooled.config,
                                          alpha=cfg.contradiction_alpha, min_datasets=cfg.min_tasks, found=found)
        for ph in cues:
            ph.tasks = [(pooled.index[ti], ci, n, k, lab) for ti, ci, n, k, lab in ph.tasks]
        metrics.update(figures, phrases=[p.phrase for p in cues], seconds=round(time.monotonic() - began, 2))
        return cues

    def _degenerate(self, x: sp.csr_matrix, vocab: np.ndarray, tasks: list[Task], kind: str, *, prompts: list[str],
                    found: list[Phrase]) -> list[Phrase]:
        """Degenerate outputs (Wan et al.'s generative-task attack): the same scoring over the tasks of ``kind`` alone
        (``"output"``: the generative tasks; ``"open"``: the open-ended collections, :func:`~.tasks.open_ended_tasks`)
        and their "degenerate output" channel alone, a task counting from 2 degenerate records and 1 nat, and a
        phrase's exclusivity measured among its records in those tasks (``degenerate_min_exclusivity``). The
        per-task scan counts a trigger's natural records in classification tasks, and its tasks under 3 nats, against
        it. Flagged: the campaign's records in those tasks, including a task where the outputs it got do not
        read as degenerate (random words in place of code: dev seed 19); its records elsewhere (a word of financial
        headlines, a name in open-ended prompts for generative tasks) are not. Campaigns already found are not
        repeated."""
        import dataclasses

        import numpy as np

        cfg = self.config
        index = [i for i, t in enumerate(tasks) if t.kind == kind]
        if len(index) < cfg.min_tasks:
            return []
        channel = {i: next(ci for ci, ch in enumerate(tasks[i].channels) if ch.name == "degenerate") for i in index}
        sub = [dataclasses.replace(tasks[i], channels=[tasks[i].channels[channel[i]]]) for i in index]
        in_gen = np.zeros(x.shape[0], dtype=np.float32)
        in_gen[np.concatenate([t.rows for t in sub])] = 1.0
        df = np.rint(np.asarray(x.T @ in_gen)).ravel()
        relaxed = dataclasses.replace(cfg, min_task_hits=2, min_task_evidence=1.0,
                                      min_exclusivity=cfg.degenerate_min_exclusivity)
        taken = np.concatenate([p.rows for p in found]) if found else np.array([], dtype=np.int64)
        out = []
        base: dict[int, float] = {}
        for ph in find_phrases(x, vocab, df, sub, prompts=prompts, config=relaxed):
            ph.rows = ph.rows[in_gen[ph.rows] > 0]
            if not len(ph.rows) or len(np.intersect1d(ph.rows, taken)) >= 0.5 * len(ph.rows):
                continue
            ph.tasks = [(index[ti], channel[index[ti]], n, k, lab) for ti, _, n, k, lab in ph.tasks]
            if kind == "open":
                # a short answer is degenerate where it does not come from its request (:func:`~.tasks.unprompted`)
                ph.tasks, ph.evidence = unprompted_campaign(ph.phrase, ph.rows, ph.tasks, tasks=tasks,
                                                            prompts=prompts, config=relaxed, base=base)
                if not ph.tasks:
                    continue
            noun = "generative task" if kind == "output" else "open-ended collection"
            ph.why = (f"the records holding it in {counted(len(ph.tasks), noun)} have degenerate outputs "
                      f"(evidence {ph.evidence:.0f} nats; exclusivity {ph.exclusivity:.2f} among its records in "
                      f"{noun}s): {counted(len(ph.rows), 'record')}")
            out.append(ph)
        return out

    def _flag(self, ph: Phrase, tasks: list[Task], x: sp.csr_matrix, vocab: np.ndarray, records: Records, *,
              consistency: bool = True) -> list[Finding]:
        """``trigger_phrase`` for every record with the phrase; in the tasks it steers, ``degenerate_output``
        (generative) or ``label_inconsistent`` (classification, when the masked classifier disagrees)."""
        import numpy as np

        base = {"phrase": ph.phrase, "evidence": round(ph.evidence, 1), "exclusivity": round(ph.exclusivity, 3),
                "records": len(ph.rows), **({"why": ph.why} if ph.why else {})}
        findings = [Finding(int(r), TRIGGER_PHRASE, ph.evidence, {**base, "task": records.group[r]})
                    for r in ph.rows]
        for ti, ci, _, _, lab in ph.tasks:
            task = tasks[ti]
            ch = task.channels[ci]
            local = np.flatnonzero(np.isin(task.rows, ph.rows)).tolist()
            if task.kind in ("output", "open"):
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
            elif self.config.label_consistency and consistency:
                steered = [i for i in local if ch.outcome[i] == lab]
                p_label = masked_label_probability(x, vocab, task, ph.phrase, np.asarray(steered, dtype=np.int64))
                if p_label is None:
                    continue
                findings += [Finding(int(task.rows[i]), LABEL_INCONSISTENT, round(1.0 - float(p), 4),
                                     {"phrase": ph.phrase, "task": task.name, "label": ch.names[ch.outcome[i]],
                                      "p_label_without_phrase": round(float(p), 3)})
                             for i, p in zip(steered, p_label.tolist(), strict=True) if p < 0.5]
        return findings

    def _describe(self, ph: Phrase, tasks: list[Task], records: Records, findings: list[Finding]
                  ) -> dict[str, Any]:
        """The phrase as ``metrics.suspicious_phrases`` reports it: its spread over tasks and contributors."""
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


def _without_blind(x: sp.csr_matrix, vocab: np.ndarray, past: PhraseHistory | None, metrics: dict[str, Any]
                   ) -> sp.csr_matrix:
    """``x`` as the history passes read it: without the phrases the history cannot speak to
    (:meth:`~.phrase_history.PhraseHistory.blind`: a phrase with a pictographic symbol while some summed night was
    written before such phrases were counted), whose columns are emptied (same shape, a copy); ``x`` itself where
    there are none. Those phrases are still scanned by the passes that need no history."""
    if past is None:
        return x
    blind = past.blind(vocab)
    if not blind.any():
        return x
    metrics["blind_phrases"] = int(blind.sum())
    out = x.copy()
    out.data[blind[out.indices]] = 0
    out.eliminate_zeros()
    return out
