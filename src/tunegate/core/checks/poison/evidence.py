"""How strongly each phrase steers the outcomes of the tasks it occurs in, and how exclusively.

**Concentration.** In each task, the records whose prompt contains the phrase concentrate when at least
``min_task_hits`` of them, and a channel's ``min_share`` of them, share one outcome. The evidence of the
task is the binomial log-likelihood ratio ``n * KL(k/n || p)`` (nats) of ``k`` of the ``n`` records against
the outcome's base rate ``p``; a phrase's evidence is the sum over its tasks.

**Exclusivity** is the share of the phrase's records in scored tasks that sit in the tasks where it
concentrates informatively (at least ``min_task_evidence``). A task where they concentrate on an outcome the task
gives so often that they could not reach ``min_task_evidence`` at its rate says nothing either way: its records are
left out of the share.

:func:`distinct_evidence` then recounts a candidate's evidence with each example and each dataset once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tunegate.core.checks.poison._text import _TOKEN, binomial_llr, phrase_regex
from tunegate.core.checks.poison.novelty import expected_rate

if TYPE_CHECKING:
    import numpy as np
    import scipy.sparse as sp

    from tunegate.core.checks.poison.config import TriggerConfig
    from tunegate.core.checks.poison.novelty import TaskHistory
    from tunegate.core.checks.poison.tasks import Task


@dataclass
class Evidence:
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
    _order: np.ndarray | None = field(default=None, repr=False)  # cols' stable sort order, built on first use
    _sorted: np.ndarray | None = field(default=None, repr=False)

    def positions(self, c: int) -> np.ndarray:
        """The pairs of phrase column ``c``, in the order ``np.flatnonzero(cols == c)`` gives them, found by
        binary search in one stable sort of ``cols`` (a scan of every pair per candidate was a large share of
        the phrase search at a million records)."""
        import numpy as np

        if self._order is None or self._sorted is None:
            self._order = np.argsort(self.cols, kind="stable")
            self._sorted = self.cols[self._order]
        lo, hi = np.searchsorted(self._sorted, [c, c + 1])
        return self._order[int(lo):int(hi)]


def concentration(x: sp.csr_matrix, df: np.ndarray, tasks: list[Task], config: TriggerConfig,
                  history: list[TaskHistory | None] | None = None) -> Evidence | None:
    """Per (phrase, task) concentration and its evidence; per phrase evidence, exclusivity, tasks.

    ``x`` is the record x phrase matrix, ``df`` each phrase's record count in the scored tasks. ``None``
    when no phrase concentrates anywhere. ``history`` (per task, from earlier nights: :mod:`.novelty`): a
    label's expected rate among a phrase's records is what the history shows for that phrase there, not the
    task's base rate (:func:`~tunegate.core.checks.poison.novelty.expected_rate`).
    """
    import numpy as np
    import scipy.sparse as sp

    n_cols = x.shape[1]
    parts: list[tuple[np.ndarray, ...]] = []
    for ti, task in enumerate(tasks):
        xt = x[task.rows]
        n_all = np.asarray(xt.sum(axis=0)).ravel()
        present = np.flatnonzero(n_all >= config.min_task_hits)  # phrases that can concentrate here
        if not len(present):
            continue
        xt = xt[:, present]
        n = n_all[present]
        best = np.full(len(present), -1.0)  # evidence of the best channel; -1: no concentration
        best_base = np.zeros(len(present))  # ... and what it would be at the task's own rate of that outcome
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
            ok = np.flatnonzero((k >= config.min_task_hits) & (k >= ch.min_share * n))
            if not len(ok):
                continue
            rate = base = ch.base[lab[ok]]
            past = history[ti] if history is not None else None
            if past is not None and ch.name == "label":
                rate = expected_rate(past, present[ok], lab[ok], rate, config.history_weight)
            llr = binomial_llr(k[ok], n[ok], rate)
            better = llr > best[ok]
            sel = ok[better]
            best[sel], best_k[sel], best_lab[sel], best_ch[sel] = llr[better], k[sel], lab[sel], ci
            best_base[sel] = llr[better] if rate is base else binomial_llr(k[sel], n[sel], base[better])
        hit = np.flatnonzero(best >= 0)
        if len(hit):
            parts.append((present[hit], np.full(len(hit), ti), best_ch[hit], n[hit], best_k[hit], best_lab[hit],
                          best[hit], best_base[hit]))
    if not parts:
        return None
    cols, tix, chx, n, k, lab, llr, llr_base = (np.concatenate(p) for p in zip(*parts, strict=True))
    evidence = np.bincount(cols, weights=llr, minlength=n_cols)
    # a task counts (for exclusivity and the task count) where the concentration is informative, not
    # where the outcome is near-universal anyway (every summary starts with a capital)
    counts = llr >= config.min_task_evidence
    covered = np.bincount(cols, weights=n * counts, minlength=n_cols)
    n_tasks = np.bincount(cols, weights=counts.astype(np.float64), minlength=n_cols)
    # a task whose phrase records share an outcome the task gives so often that the concentration could not be
    # informative there (under min_task_evidence at the task's own rate) neither supports nor contradicts: its
    # records leave the share's base (a clean-label campaign that picked a task's majority label: dev seed 11)
    silent = np.bincount(cols, weights=n * (~counts & (llr_base < config.min_task_evidence)), minlength=n_cols)
    base = np.maximum(df - silent, covered)
    exclusivity = np.divide(covered, base, out=np.zeros(n_cols), where=base > 0)
    return Evidence(cols, tix, chx, n, k, lab, llr, evidence, exclusivity, n_tasks, covered)


def task_of_rows(tasks: list[Task], n_rows: int) -> np.ndarray | None:
    """Each record's position in ``tasks`` (-1: in none), or ``None`` when a record is in two tasks."""
    import numpy as np

    owner = np.full(n_rows, -1, dtype=np.int64)
    for ti, task in enumerate(tasks):
        if (owner[task.rows] >= 0).any():
            return None
        owner[task.rows] = ti
    return owner


def label_mask(tasks: list[Task]) -> np.ndarray:
    """Per task, whether it is a classification task, plus a last ``False`` entry: indexed by a record's ``owner``
    (:func:`task_of_rows`), -1 (in no task) reads that last entry."""
    import numpy as np

    return np.asarray([t.kind == "label" for t in tasks] + [False], dtype=bool)


def rows_by_task(xc: sp.csc_matrix, c: int, owner: np.ndarray, keep: np.ndarray) -> dict[int, np.ndarray]:
    """Phrase ``c``'s records (column of ``xc``) per task, in the tasks ``keep`` marks (:func:`label_mask`)."""
    import numpy as np

    mine = xc.indices[xc.indptr[c]:xc.indptr[c + 1]]
    mine = mine[keep[owner[mine]]]
    return {ti: mine[owner[mine] == ti] for ti in np.unique(owner[mine]).tolist()}


#: The false discovery rate over a raised campaign's tasks at which they are flagged (:func:`flag_level`).
FLAG_FDR = 0.15


def flag_level(p: list[float], *, floor: float, q: float | None = None, lam: float = 0.5) -> float:
    """The p-value up to which a raised campaign's tasks are flagged (``p``: the p-values of its datasets, or of
    its tasks): ``floor`` (the level at which one task counts as steered), or further where the adaptive
    Benjamini-Hochberg step-up (Storey, Taylor and Siegmund 2004) over them reaches at false discovery rate ``q``
    (``FLAG_FDR``). The share of them where the phrase is natural is estimated as ``pi0 = (#{p > lam} + 1) / ((1 -
    lam) m)``, and the largest ``p_(i) <= q i / (pi0 m)`` is the level: a campaign bursting nearly everywhere it
    touches flags its tasks of 3 records too, whose own p-value depends on how long the history is; a phrase that is
    mostly natural flags at ``floor``."""
    import numpy as np

    q = FLAG_FDR if q is None else q
    m = len(p)
    if not m:
        return floor
    ranked = np.sort(np.asarray(p, dtype=np.float64))
    pi0 = min(1.0, (int((ranked > lam).sum()) + 1) / ((1.0 - lam) * m))
    passing = np.flatnonzero(ranked <= q * np.arange(1, m + 1) / (pi0 * m))
    return max(floor, float(ranked[passing[-1]])) if len(passing) else floor


def flagged_tasks(p: np.ndarray, counts: np.ndarray, expected: np.ndarray, families: list[str], *, floor: float
                  ) -> np.ndarray:
    """Which of a raised campaign's tasks to flag (per task: its p-value ``p``, its ``counts`` records of the phrase on
    the label the p-value reads, those the history's rate ``expected`` there, its dataset in ``families``): the tasks
    at ``floor``, and up to the level :func:`flag_level` reaches over the phrase's datasets (a dataset's p-value is its
    smallest task p-value times its tasks: the tasks of one dataset often label the same texts, and a natural phrase
    that is a little more frequent tonight in those texts is so in all of them) the tasks where the excess would be
    at least half of what is flagged (``expected <= counts / 2``: a rare word's 3 records where the history expects
    one; not an everyday phrase's 20 records where it expects 12, whose flags would be mostly natural records)."""
    import numpy as np

    p = np.asarray(p, dtype=np.float64)
    by_family: dict[str, list[float]] = {}
    for family, value in zip(families, p.tolist(), strict=True):
        by_family.setdefault(family, []).append(value)
    level = flag_level([min(1.0, min(ps) * len(ps)) for ps in by_family.values()], floor=floor)
    return np.asarray((p <= floor) | ((p <= level) & (2.0 * np.asarray(expected) <= np.asarray(counts))))


def distinct_evidence(c: int, ev: Evidence, tasks: list[Task], xc: sp.csc_matrix, *, prompts: list[str],
                      config: TriggerConfig, phrase: str, owner: np.ndarray | None = None) -> tuple[float, int]:
    """Evidence of phrase ``c`` counting each underlying example and each dataset once.

    One dataset often appears as several tasks: P3 ships every example under 5-10 prompt templates
    (``amazon_polarity_Is_this_review``, ``amazon_polarity_user_satisfied``, ...), HatEval labels the
    same tweets along three dimensions. A phrase concentrated in all of them is one observation, not
    eight. Tasks are taken strongest first:

    * a task whose records with the phrase mostly repeat examples already counted adds nothing. An
      example is the phrase in its context (:func:`phrase_context`, the words around it), which
      survives a different template around the same text;
    * the tasks of one dataset (:func:`~tunegate.core.checks.poison.tasks.task_family`) add at most
      ``max_family_evidence`` together: a natural cue's evidence grows with the size of its dataset, a
      campaign is spread over datasets.

    ``owner`` (:func:`task_of_rows`) finds the phrase's records of a task without scanning the task.
    Returns the evidence and the number of datasets with at least ``min_task_evidence``.
    """
    import numpy as np

    rows = xc.indices[xc.indptr[c]:xc.indptr[c + 1]]
    words = phrase.split()
    finder = ContextFinder(words, config.context_words)
    seen: set[str] = set()
    family: dict[str, float] = {}
    sel = ev.positions(c)
    for j in sel[np.argsort(-ev.llr[sel])].tolist():
        task = tasks[int(ev.tix[j])]
        ti = int(ev.tix[j])
        mine = rows[owner[rows] == ti] if owner is not None else np.intersect1d(task.rows, rows)
        texts = {finder.context(prompts[r]) for r in mine.tolist()}
        if len(texts & seen) < 0.5 * len(texts):
            family[task.family] = family.get(task.family, 0.0) + float(ev.llr[j])
        seen |= texts
    total = sum(min(e, config.max_family_evidence) for e in family.values())
    return total, sum(e >= config.min_task_evidence for e in family.values())


class ContextFinder:
    """:func:`phrase_context` for one phrase over many prompts, without tokenizing each whole prompt: the phrase's
    first occurrence is found by a regular expression over the lower-cased prompt (:func:`~._text.phrase_regex`:
    exactly the phrase as consecutive tokens), and only a window of characters on either side is tokenized (widened
    to the whole side when it holds fewer than ``width`` whole words). The same strings as reading the prompt's words
    in order (tested)."""

    #: Characters read per context word on either side before falling back to the whole side.
    CHARS_PER_WORD = 40

    def __init__(self, words: list[str], width: int) -> None:
        self._words = words
        self._width = width
        self._window = self.CHARS_PER_WORD * (width + 1)
        self._pattern = re.compile(phrase_regex(words))

    def context(self, prompt: str) -> str:
        low = prompt.lower()
        if not self._words:  # the empty phrase is found at the start
            return " ".join(_TOKEN.findall(low)[:self._width])
        m = self._pattern.search(low)
        if m is None:
            return " ".join(_TOKEN.findall(low))
        width = self._width
        left: list[str] = []
        right: list[str] = []
        if width > 0:
            start, end = m.start(), m.end()
            lo = max(0, start - self._window)
            left = _TOKEN.findall(low, lo, start)  # from ``lo`` the pattern sees what precedes: no cut word
            if len(left) < width and lo > 0:
                left = _TOKEN.findall(low, 0, start)
            left = left[-width:]
            hi = min(len(low), end + self._window)
            right = _TOKEN.findall(low, end, hi)
            if hi < len(low) and right and _is_word(low, hi - 1) and _is_word(low, hi):
                right = right[:-1]  # up to ``hi`` the text looks as if it ended there: a cut word
            if len(right) < width and hi < len(low):
                right = _TOKEN.findall(low, end)
            right = right[:width]
        return " ".join([*left, *self._words, *right])


_WORD_CHAR = re.compile(r"\w")


def _is_word(text: str, i: int) -> bool:
    return bool(_WORD_CHAR.match(text, i))


def phrase_context(prompt: str, words: list[str], width: int) -> str:
    """The phrase's first occurrence in ``prompt`` with ``width`` words either side, lower-cased: the same
    example under another prompt template gives the same context. Whole prompt when not found. (For many prompts
    and one phrase, keep one :class:`ContextFinder`.)"""
    return ContextFinder(words, width).context(prompt)
