"""The breadth pass of ``poison_trigger`` (with a history): a word the history holds whose count tonight bursts on one
label in many datasets at once. Clean-label campaigns of a rare word, spread thin.

A clean-label campaign spread thin (3-5 records in each of a dozen tasks, the trigger a word the batch already holds:
an abbreviation, slang) takes records that already carry the target label: their text agrees with it (the
contradiction pass reads nothing), and 3-5 records of one label in a task are what a natural word of a few records
often shows (the label statistics read little). What the campaign cannot hide is that the word's count jumps, on one
label, in every task it was planted in. A natural word whose use changes (a topic of the week) changes in the few
datasets of its topic; a campaign spreads over datasets of every kind on purpose.

**Which phrases are tested.** The phrases the history holds whose count tonight is a burst the history cannot explain
(:func:`~.novelty_pass.burst`, the conditional test of two Poisson rates over the tasks the history knows), family-wise
significant at ``breadth_alpha``: ``burst >= ln(m) + ln(1 / breadth_alpha)`` for the ``m`` phrases of the history that
occur tonight (as the contradiction pass's burst gate). Dev nights (14 distinct nights): 0-2 natural phrases pass it.

**Statistic.** In each classification task holding >= 2 of the phrase's records, the task's p-value
(:func:`task_burst`): in a task the history knows, per label, ``P(K >= k)`` for tonight's ``k`` records of the phrase
on it, ``K`` binomial over ``k + h`` (``h`` the history's records of the phrase on that label) with the nights' exposure
share; the smallest times the task's labels. In a task it cannot speak to, the Poisson tail of the records on the label
most of them carry, at the phrase's rate over the tasks it knows. A dataset's p-value is
its smallest task p-value times its tasks (they often label the same texts). The phrase *bursts* in a dataset where
that is at most ``TASK_BURST_P``; under the null (no dataset's rate changed) each dataset does so with probability at
most ``TASK_BURST_P``, independently, so bursting in ``j`` of ``D`` datasets has the binomial tail
``P(Bin(D, TASK_BURST_P) >= j)``. Its ``-ln`` is the phrase's breadth, raised at a family-wise bar over every phrase
the history holds that occurs tonight, and only in at least ``min_tasks`` datasets. The bar counts tests as Tarone's
(:func:`breadth_bar`): a phrase in ``D`` datasets reaches at most ``-D ln(TASK_BURST_P)``, so the many phrases in a
few datasets, which could never reach it, cost none of the false-alarm rate (dev: ~3,400 of ~18,000 phrases count, a
bar of 12.7 nats instead of 14.4). Dev (seeds 10-18, 14 distinct nights): natural phrases that pass the burst gate
burst in 0-2 of 1-7 datasets (breadth 0-3.1 nats); planted rare words in 8-12 of 10-14 (20.3-33.4 nats). A campaign
planted in datasets where the word is also natural bursts in fewer of them (seed 922: "wash", 7 of 13, 13.8 nats,
between the two bars).

**What is flagged.** In each task where the phrase bursts (task p-value at most ``TASK_BURST_P``, or further where the
adaptive Benjamini-Hochberg step-up over its datasets reaches, where the records flagged would be at least twice those
the history expects: :func:`~.evidence.flagged_tasks`), its records on the label the task's p-value reads: the
campaign's records; its natural records elsewhere are left alone. A campaign another pass raised
first keeps its name and gets these records added (:func:`~.phrases.join_found`).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from tunegate.core.checks.poison.evidence import flagged_tasks, label_mask, rows_by_task, task_of_rows
from tunegate.core.checks.poison.novelty_pass import TASK_BURST_P, expected_records, known_rate, knows
from tunegate.core.checks.poison.phrases import Phrase, join_found, named_campaigns

if TYPE_CHECKING:
    import numpy as np
    import scipy.sparse as sp

    from tunegate.core.checks.poison.config import TriggerConfig
    from tunegate.core.checks.poison.novelty import TaskHistory
    from tunegate.core.checks.poison.novelty_pass import LabelStatistics
    from tunegate.core.checks.poison.tasks import Task



def broad_phrases(x: sp.csr_matrix, vocab: np.ndarray, tasks: list[Task], stats: LabelStatistics,
                  config: TriggerConfig, *, history: list[TaskHistory | None], found: list[Phrase]
                  ) -> tuple[list[Phrase], dict[str, float]]:
    """The phrases of the history whose count bursts on one label in many datasets tonight, strongest first (module
    docstring); and the pass's figures (phrases the history holds that occur tonight, those bursting, the bar)."""
    import numpy as np

    gate, tests, bursting = stats.bursting(config.breadth_alpha)
    candidates = np.flatnonzero(bursting)
    figures: dict[str, float] = {"tests": float(tests), "bar": round(gate, 2), "bursting": float(len(candidates))}
    owner = task_of_rows(tasks, x.shape[0])
    if owner is None or not len(candidates):
        return [], figures
    bar, tarone = breadth_bar(x, tasks, np.flatnonzero(stats.held), config)
    figures.update(tarone=float(tarone), breadth_bar=round(bar, 2))
    xc = x.tocsc()
    is_label = label_mask(tasks)
    breadth: dict[int, float] = {}
    rows_of: dict[int, np.ndarray] = {}
    detail_of: dict[int, list[tuple[int, int, int, int, int]]] = {}
    spread: dict[int, tuple[int, int]] = {}
    for c in candidates.tolist():
        rate = known_rate(history, c, config.min_task_records)
        by_family: dict[str, list[float]] = {}
        per_task = []
        for ti, held in rows_by_task(xc, c, owner, is_label).items():
            if len(held) < 2:
                continue
            task = tasks[ti]
            labels = task.labels.outcome[np.searchsorted(task.rows, held)]
            counts = np.bincount(labels, minlength=len(task.labels.names))
            p, top = task_burst(counts, task, history[ti], c, rate=rate, min_known=config.min_task_records)
            by_family.setdefault(task.family, []).append(p)
            per_task.append((p, ti, held, held[labels == top], top,
                             expected_records(task, history[ti], c, top, rate=rate, min_known=config.min_task_records)))
        dataset_p = [min(1.0, min(ps) * len(ps)) for ps in by_family.values()]
        j = sum(p <= TASK_BURST_P for p in dataset_p)
        score = binomial_surprise(j, len(dataset_p), TASK_BURST_P)
        if score < bar or j < config.min_tasks:
            continue
        keep = flagged_tasks(np.array([t[0] for t in per_task]), np.array([len(t[3]) for t in per_task]),
                             np.array([t[5] for t in per_task]), [tasks[t[1]].family for t in per_task],
                             floor=TASK_BURST_P)
        flagged = [t for t, kept in zip(per_task, keep.tolist(), strict=True) if kept]
        breadth[c] = score
        rows_of[c] = np.unique(np.concatenate([t[3] for t in flagged]))
        detail_of[c] = sorted(((ti, 0, len(held), len(on), top) for _, ti, held, on, top, _ in flagged),
                              key=lambda t: -t[3])
        spread[c] = (j, len(dataset_p))
    figures["raised"] = float(len(breadth))
    joined = [c for c in list(breadth) if join_found(rows_of[c], detail_of[c], found, xc=xc, owner=owner,
                                                             by="breadth pass", col=c)]
    for c in joined:
        del breadth[c], rows_of[c]
    figures["joined"] = float(len(joined))
    out = []
    for head, cl, held in named_campaigns(breadth, rows_of, xc, vocab, found):
        j, d = spread[head]
        occurs = xc.indices[xc.indptr[head]:xc.indptr[head + 1]]
        why = (f"a phrase this pipeline's earlier nights hold, whose count tonight bursts on one label in {j} of the "
               f"{d} datasets holding it (burst {float(stats.burst[head]):.0f} nats overall; breadth "
               f"{breadth[head]:.1f} nats): {len(held)} records in {len(detail_of[head])} tasks")
        covered = min(1.0, len(rows_of[head]) / max(len(occurs), 1))
        out.append(Phrase(int(head), str(vocab[head]), breadth[head], covered, held, detail_of[head],
                          [str(vocab[m]) for m in cl if m != head], why=why))
    figures["found"] = float(len(out))
    return out, figures


def breadth_bar(x: sp.csr_matrix, tasks: list[Task], tested: np.ndarray, config: TriggerConfig) -> tuple[float, int]:
    """The breadth's family-wise bar over the phrases ``tested`` (those of the history that occur tonight): ``ln(m) +
    ln(1 / breadth_alpha)`` for Tarone's count ``m``. A phrase whose records fill ``D`` datasets (>= 2 of them in a
    classification task of the dataset) reaches at most ``-D ln(TASK_BURST_P)`` (every dataset bursting); under
    ``min_tasks`` datasets it is never raised. Most phrases fill a few datasets and can never reach the bar, so they
    cost none of the false-alarm rate. Returns the bar and the count."""
    import numpy as np

    from tunegate.core.checks.poison.novelty_pass import _tarone

    margin = math.log(1.0 / config.breadth_alpha)
    holding: dict[str, np.ndarray] = {}
    xt = x[:, tested].tocsr()
    for task in tasks:
        if task.kind == "label":
            two = np.asarray(xt[task.rows].sum(axis=0)).ravel() >= 2
            holding[task.family] = holding[task.family] | two if task.family in holding else two
    datasets = np.sum(list(holding.values()), axis=0) if holding else np.zeros(len(tested))
    reach = np.where(datasets >= config.min_tasks, -datasets * math.log(TASK_BURST_P), 0.0)
    tests = _tarone(reach, margin)
    return math.log(tests) + margin, tests


def task_burst(counts: np.ndarray, task: Task, past: TaskHistory | None, c: int, *, rate: float,
               min_known: int) -> tuple[float, int]:
    """The p-value of tonight's records of phrase ``c`` in ``task`` (``counts``: per label), and the label it reads.

    In a task the history knows, per label with >= 2 records: the conditional test of two Poisson rates,
    ``P(Bin(k + h, s) >= k)`` for tonight's ``k`` and the history's ``h`` records of the phrase on that label, ``s``
    tonight's share of the exposure (the task's records tonight over those of tonight and the history); exact, and
    defined when ``h`` is 0 (``s ** k``). The task's p-value is the smallest, times the task's labels (the label is
    picked after looking), and its label that one. In a task the history cannot speak to: ``P(Poisson(rate * N) >=
    k)`` for the records on the label most of them carry, at the phrase's ``rate`` over the known tasks
    (:func:`~.novelty_pass.known_rate`) and the task's ``N`` records: the phrase's count on any label is at most its
    count, so no correction is needed."""
    import numpy as np
    from scipy.special import betainc, gammainc

    counts = np.asarray(counts, dtype=np.float64)
    size = float(len(task.rows))
    top = int(counts.argmax())
    if not knows(past, min_known):
        return (float(gammainc(counts[top], rate * size)) if counts[top] > 0 else 1.0), top
    held = past[0][c].toarray().ravel()  # the history's records of the phrase, per label of the task
    share = size / (size + float(past[1].sum()))
    tails = np.ones(len(counts))
    live = counts >= 2
    tails[live] = betainc(counts[live], held[live] + 1.0, share)
    label = int(tails.argmin())
    return min(1.0, float(tails[label]) * len(counts)), label


def binomial_surprise(j: int, d: int, p: float) -> float:
    """``-ln P(Bin(d, p) >= j)``: ``j`` of ``d`` independent tests significant at ``p`` (0 when ``j`` is 0)."""
    from scipy.stats import binom

    if j <= 0:
        return 0.0
    return float(-math.log(max(float(binom.sf(j - 1, d, p)), 1e-300)))


__all__ = ["TASK_BURST_P", "binomial_surprise", "broad_phrases", "task_burst"]
