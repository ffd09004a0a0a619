"""The contradiction pass of ``poison_trigger`` (with a history): a new or bursting phrase whose records carry labels
their own text contradicts, in several datasets. Dirty-label poison at a dose too small for label statistics.

A dirty-label campaign of a few records per task (3-5 in each of 3-15 tasks) gives a phrase one label in each task,
which natural phrases of a few records also often have (docs/poison.md, detection floor). What they rarely have is
records whose text reads as another label: the campaign took records of the other class and relabelled them. Per
record, :func:`~.contradiction.label_ranks` says how far down the records of its label an out-of-fold model (which
does not read rare words, the trigger included) ranks it.

**Which phrases are tested** (decided on the text and the history alone, before any label is read): tonight's new
vocabulary, held by ``MIN_RECORDS`` to ``MAX_RECORDS`` records of classification tasks, with >= 2 records in tasks of
>= ``min_tasks`` datasets. New vocabulary is a phrase the history has never seen in its tasks (the novelty pass's
*unseen* group: a planted name), or one whose count tonight the history's cannot explain: a rare word the history
holds a few times, planted in dozens of records ("bb", "puke"). That is the conditional test of two Poisson rates
(:func:`~.novelty_pass.burst`), family-wise significant at ``contradiction_alpha`` over the phrases it is computed
for: ``burst >= ln(m) + ln(1 / contradiction_alpha)`` (dev, 14 distinct nights: a bar of 14.3-14.9 nats, passed by
0-2 natural phrases of a clean night and by planted rare words at 28-52). A natural phrase the history knows at its
usual rate has its label behaviour on record and is left to the other passes. A phrase whose burst falls short of the
gate by at most ``NEAR_NATS`` is tested too, in a family of its own (:data:`NEAR`, below): where a word's natural
records are many, a campaign's records among them may not make its count stand out however plainly their labels are
contradicted (held-out 1049: "mr", a burst of 13.0 nats against a gate of 14.41; dev seed 11, "dr", 12.6 against 14.4).
The band holds 4-11 natural phrases a night on the dev mixed batches (RESULTS.md 6ba).

**Statistic.** In each task where a tested phrase has >= 2 records, the records on the label most of them carry (a
campaign's target) give ``C = sum(-ln u)``, a phrase's near-duplicate records in the task counted once
(:meth:`Entries.distinct`: one text rewritten several ways has ranks that move together); under the null (the
ranks are uniform) ``C`` follows a Gamma(r, 1) for ``r`` records, whose tail is the task's p-value. Tasks of one
dataset often hold the same texts: a dataset gives its smallest p-value times the number of its tasks (Bonferroni,
capped at 1). The datasets' p-values are combined by
Fisher's method (``-sum ln p`` is Gamma(D, 1) for ``D`` datasets): the phrase's contradiction surprise ``b``. Its
label surprise ``a`` is the novelty pass's (the history's predictive; :class:`~.novelty_pass.LabelStatistics`): under
the null the ranks are uniform *given* the labels, so ``a`` and ``b`` are independent and Fisher's method combines them
too: ``s = a + b``, surprise ``s - ln(1 + s)``. The false-alarm rate per night is held at ``contradiction_alpha`` by
a weighted Bonferroni over the phrases tested (:func:`_bars`; the phrases just under the burst gate are a family of
their own, at ``contradiction_alpha``: their count alone selected them, so the band's own Bonferroni reads them): the
*broad* phrases (records in >= ``BROAD_DATASETS``
datasets, >= ``BROAD_RECORDS`` in each: the shape of a campaign over several tasks, read from the text alone) share
half of it, the rest the other half; the strongest phrase is a trigger when its surprise reaches its kind's ``ln(m) +
ln(2 / contradiction_alpha)`` (``ln(tests) + ln(1 / contradiction_alpha)`` when every phrase, or none, is broad).
Several campaigns in one night (issue 11's five at once) are raised by the Benjamini-Hochberg
step-down over campaigns (:func:`_step_down`): the ``i``-th distinct campaign needs ``ln(i)`` nats less. On a clean
night it is the same test; once campaigns are found, the expected share of natural phrases among the raised stays
under ``contradiction_alpha``.

**What is flagged.** A raised phrase is a campaign when at least ``min_tasks`` datasets hold 2 or more of its records on
one label (as for every pass: a skew in one dataset is how language works); then, in every classification task where the
phrase occurs, its records on the label most of them carry there (``trigger_phrase``; the masked classifier adds
``label_inconsistent`` where it disagrees); for a rare word the history holds, only in the tasks where it bursts
(:func:`_bursting`: at ``TASK_BURST_P`` and further by the step-up over its tasks), so its natural records elsewhere
are left alone. Clean-label poison (records already of the target
label) gives no contradiction; it is left to the other passes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

from tunegate.core.checks.poison._text import counted
from tunegate.core.checks.poison.contradiction import label_ranks
from tunegate.core.checks.poison.evidence import flagged_tasks, label_mask, rows_by_task, task_of_rows
from tunegate.core.checks.poison.novelty_pass import TASK_BURST_P, burst, knows
from tunegate.core.checks.poison.phrases import Phrase, named_campaigns

if TYPE_CHECKING:
    import numpy as np
    import scipy.sparse as sp

    from tunegate.core.checks.poison.config import TriggerConfig
    from tunegate.core.checks.poison.novelty import TaskHistory
    from tunegate.core.checks.poison.novelty_pass import LabelStatistics
    from tunegate.core.checks.poison.tasks import Task

#: A tested phrase is held by at least this many records of classification tasks ...
MIN_RECORDS = 4
#: ... and at most this many: a campaign small enough to hide (the floor benchmark's thin spread plants 36-75);
#: above it, label statistics alone find a campaign.
MAX_RECORDS = 100
#: The novelty pass's group of phrases the history has never seen in their tasks.
UNSEEN = 0
#: The step-down (:func:`_step_down`) lowers the bar for at most this many campaigns in one night.
MAX_CAMPAIGNS = 20
#: A tested phrase is *broad* when at least ``BROAD_DATASETS`` datasets each hold ``BROAD_RECORDS`` or more of its
#: records: the shape of a campaign run over several tasks, decided on the text alone. Broad phrases share half of
#: the false-alarm rate among themselves (:func:`_bars`).
BROAD_DATASETS = 3
BROAD_RECORDS = 3
#: A phrase held in one dataset only is tested up to this many records (a campaign run in one dataset: label statistics
#: do not find it however large, since one topical dataset skews a phrase's labels naturally).
MAX_RECORDS_ONE_DATASET = 1000
#: The kinds of tested phrase (:meth:`Entries.kinds`): broad, the other phrases of several datasets, phrases of one
#: dataset. Each shares its part of the false-alarm rate among its own (:func:`_bars`).
BROAD, SEVERAL, ONE = 0, 1, 2
#: ... and a phrase the history holds whose burst fell short of the gate by at most ``NEAR_NATS`` is of a family of its
#: own (:data:`NEAR`): selected by its count alone, its records' labels are read against a Bonferroni over that family.
NEAR = 3
NEAR_NATS = 3.0
#: Before a phrase is tested in a task, the n-grams made of its words are left out of the task's model where its own
#: records (``MASK_RECORDS`` or more) are at least ``MASK_SHARE`` of the records that make that n-gram a feature: ten
#: relabelled records would otherwise teach the model that the trigger means their label, and rank themselves high.
MASK_RECORDS = 5
MASK_SHARE = 0.25
#: Two records of a phrase in one task are one text (a sentence rewritten, a minimal pair) when they share at least
#: this share of their rarer 1-2-grams (Jaccard) ...
SAME_TEXT = 0.5
#: ... the rarer ones being those in fewer than this share of the task's records (a template's words are in all).
TEMPLATE_SHARE = 0.1


def contradiction_phrases(x: sp.csr_matrix, vocab: np.ndarray, tasks: list[Task], stats: LabelStatistics,
                          config: TriggerConfig, *, found: list[Phrase], history: list[TaskHistory | None]
                          ) -> tuple[list[Phrase], dict[str, float]]:
    """The new phrases whose records' labels their text contradicts (module docstring), strongest first; and the
    pass's figures (phrases tested, bar). ``history``: per task, the history's phrase counts (where a raised rare word
    bursts: :func:`_bursting`)."""
    import numpy as np

    owner = task_of_rows(tasks, x.shape[0])
    figures: dict[str, float] = {}
    label = [ti for ti, t in enumerate(tasks) if t.kind == "label"]
    gate, _, bursting = stats.bursting(config.contradiction_alpha)
    near = stats.held & ~bursting & (stats.burst >= gate - NEAR_NATS)
    novel = np.flatnonzero((stats.group == UNSEEN) | bursting | near)
    figures.update(bursting=float(int(bursting.sum())), burst_bar=round(gate, 2), near=float(int(near.sum())))
    if owner is None or not label or not len(novel):
        return [], figures
    rows = np.concatenate([tasks[ti].rows for ti in label])
    entries = Entries.of(x[rows][:, novel].tocoo(), rows, owner, tasks)
    tested = entries.tested(config.min_tasks)
    kind = entries.kinds(tested)
    kind[near[novel[tested]]] = NEAR
    bars = _bars(kind, config.contradiction_alpha)
    several = (kind != ONE) & (kind != NEAR)
    bar = float(bars[several].max(initial=math.log(1.0 / config.contradiction_alpha)))
    figures.update(tests=float(int(several.sum())), bar=round(bar, 2), tests_broad=float(int((kind == BROAD).sum())),
                   tests_one=float(int((kind == ONE).sum())))
    figures.update(tests_near=float(int((kind == NEAR).sum())))
    for k, name in ((BROAD, "bar_broad"), (ONE, "bar_one"), (NEAR, "bar_near")):
        if (kind == k).any():
            figures[name] = round(float(bars[kind == k].max()), 2)
    if not len(tested):
        return [], figures
    ranks = entries.ranks(tested, x, vocab=vocab, novel=novel, tasks=tasks, history=history)
    b = entries.contradiction(tested, ranks, distinct=entries.distinct(tested, x, tasks))
    cache: dict[tuple[int, tuple[float, ...]], np.ndarray] = {}
    scored: dict[int, tuple[float, float, float]] = {}
    bar_of: dict[int, float] = {}
    step = math.log(min(MAX_CAMPAIGNS, max(len(tested), 1)))  # what the step-down takes off at most
    one_dataset = {int(novel[j]) for j, kind_j in zip(tested.tolist(), kind.tolist(), strict=True) if kind_j == ONE}
    # the label surprise is at most what it could reach: the phrases it could carry to the step-down's last bar
    within = [(int(novel[j]), bj, bar_j)
              for j, bj, bar_j in zip(tested.tolist(), b.tolist(), bars.tolist(), strict=True)
              if _fisher(float(stats.achievable[int(novel[j])]) + bj) >= bar_j - step]
    stats.prime([c for c, _, _ in within], config.novelty_task_nats, cache)
    for c, bj, bar_j in within:
        lowest = bar_j - step  # the bar of the last campaign the step-down reaches
        a = stats.surprise(c, config.novelty_task_nats, cache)
        if _fisher(a + bj) >= lowest:
            scored[c] = (_fisher(a + bj), a, bj)
            bar_of[c] = bar_j
    if not scored:
        return [], figures
    xc = x.tocsc()
    raised = _step_down(scored, bar_of, xc, len(tested))
    figures["campaigns"] = float(len({raised[c][3] for c in raised}))
    if not raised:
        return [], figures
    is_label = label_mask(tasks)
    per_task = {}
    for c in raised:
        per_task[c] = rows_by_task(xc, c, owner, is_label)
        if stats.group[c] != UNSEEN:
            per_task[c] = _bursting(per_task[c], tasks, history, c, min_known=config.min_task_records)
    rows_of, detail_of = {}, {}
    for c in raised:
        rows_of[c], detail_of[c] = _campaign(tasks, per_task[c])
    # a campaign another pass raised gets this pass's records where its name is a campaign by itself (below)
    joinable = {c: d for c, d in detail_of.items()
                if c in one_dataset or len({tasks[t[0]].family for t in d}) >= config.min_tasks}
    out: list[Phrase] = []
    joined: list[int] = []
    for head, cl, held in named_campaigns({c: raised[c][0] for c in raised}, rows_of, xc, vocab, found,
                                          detail_of=joinable, owner=owner, by="contradiction pass", joined=joined):
        surprise, a, bj, _ = raised[head]
        detail = detail_of[head]
        steered = len({tasks[t[0]].family for t in detail})
        if steered < config.min_tasks and head not in one_dataset:
            # one dataset where it holds one label: how language works, not a campaign (as every pass), unless it was
            # tested as a phrase of one dataset, against that kind's own bar
            continue
        holding = sum(len(r) for r in per_task[head].values())
        what = ("new phrase" if stats.group[head] == UNSEEN else
                f"phrase far more frequent tonight than in this pipeline's earlier nights (burst "
                f"{float(stats.burst[head]):.0f} nats)")
        why = (f"{what} whose records carry labels their own text contradicts: {len(held)} records in "
               f"{counted(steered, 'dataset')} rank among the least likely of their label "
               f"(out-of-fold model without rare words; contradiction {bj:.1f} nats, label skew {a:.1f} nats)")
        out.append(Phrase(int(head), str(vocab[head]), surprise, min(1.0, len(rows_of[head]) / holding), held,
                          detail, [str(vocab[m]) for m in cl if m != head], why=why))
    figures.update(found=float(len(out)), joined=float(len(joined)))
    return out, figures


def _bars(kind: np.ndarray, alpha: float) -> np.ndarray:
    """Per tested phrase, its Bonferroni bar in nats (``kind``: :data:`BROAD`, :data:`SEVERAL`, :data:`ONE`,
    :meth:`Entries.kinds`). The phrases of several datasets: ``ln(m) + ln(1 / alpha)`` over the ``m`` of them, or,
    when some are broad and some are not, each kind sharing half of ``alpha`` among its own: ``ln(m_kind) + ln(2 /
    alpha)``. The phrases of one dataset are a family of their own, at ``alpha``: ``ln(m_one) + ln(1 / alpha)``; so are
    those whose burst fell just short of the gate (:data:`NEAR`): ``ln(m_near) + ln(1 / alpha)``.

    A weighted Bonferroni (the weights, 1/2 per kind, fixed before any label is read, so the false-alarm rate per
    night stays ``alpha`` for the phrases of several datasets). Why: the few phrases whose records fill three datasets
    or more (25-27 of ~820 on a dev night) are the shape of a campaign over several tasks, and among the many phrases
    of one or two busy datasets their bar was the crowd's: a dirty-label campaign of 10 records in 3 tasks reached
    7-10 nats against 11.3. The phrases of one dataset (a campaign run in one dataset; tested since the
    thirty-second session) do not take a share of that rate: they would raise the others' bar."""
    import numpy as np

    out = np.zeros(len(kind))
    for family in (ONE, NEAR):
        mine = kind == family
        if mine.any():
            out[mine] = math.log(int(mine.sum())) + math.log(1.0 / alpha)
    several = (kind != ONE) & (kind != NEAR)
    m_broad, m = int((kind == BROAD).sum()), int(several.sum())
    if m_broad in (0, m):
        out[several] = math.log(max(m, 1)) + math.log(1.0 / alpha)
    else:
        share = np.where(kind[several] == BROAD, math.log(m_broad), math.log(m - m_broad))
        out[several] = share + math.log(2.0 / alpha)
    return out


def _step_down(scored: dict[int, tuple[float, float, float]], bars: dict[int, float], xc: sp.csc_matrix, tests: int
               ) -> dict[int, tuple[float, float, float, int]]:
    """The phrases of ``scored`` (surprise, label skew, contradiction) raised by the Benjamini-Hochberg step-down over
    campaigns, each with its campaign's rank: the phrase furthest above its Bonferroni bar (``bars``, :func:`_bars`)
    needs that bar, the ``i``-th distinct campaign its bar ``- ln(i)`` (weighted: the phrases are taken by their
    margin over their own bar); a phrase whose records are mostly those of campaigns already raised (a word of one, a
    variant) is held to the bar of the last one and does not lower the next. It stops at the first phrase short of
    its bar. With no campaign at all this is Bonferroni (a clean night is alerted at ``contradiction_alpha`` as
    before); with several, each found campaign lowers the bar for the next, so five small campaigns need not each
    reach the bar of one (the expected share of natural phrases among those raised stays below the alpha)."""
    import numpy as np

    raised: dict[int, tuple[float, float, float, int]] = {}
    covered = np.zeros(xc.shape[0], dtype=bool)
    level = 0
    for c in sorted(scored, key=lambda c: (bars[c] - scored[c][0], c)):
        rows = xc.indices[xc.indptr[c]:xc.indptr[c + 1]]
        fresh = not len(rows) or covered[rows].mean() < 0.5
        rank = level + 1 if fresh else max(level, 1)
        if rank > min(MAX_CAMPAIGNS, tests) or scored[c][0] < bars[c] - math.log(rank):
            break
        raised[c] = (*scored[c], rank)
        covered[rows] = True
        level = rank
    return raised


def _fisher(s: float) -> float:
    """``-ln P(A + B >= s)`` for two independent surprises (``-ln`` of p-values): Fisher's method for two tests."""
    return s - math.log1p(s) if s > 0 else 0.0


@dataclass
class Entries:
    """Each (phrase, record) of the new phrases in classification tasks: the phrase (its position among them),
    the record, its task, its task's dataset and its label there."""

    phrase: np.ndarray
    row: np.ndarray
    task: np.ndarray
    family: np.ndarray
    label: np.ndarray

    @classmethod
    def of(cls, coo: sp.coo_matrix, rows: np.ndarray, owner: np.ndarray, tasks: list[Task]) -> Entries:
        import numpy as np

        row = rows[coo.row]
        task = owner[row]
        families: dict[str, int] = {}
        family_of = np.asarray([families.setdefault(t.family, len(families)) for t in tasks], dtype=np.int64)
        label_of = np.zeros(len(owner), dtype=np.int64)
        for ti in np.unique(task).tolist():
            label_of[tasks[ti].rows] = tasks[ti].labels.outcome
        return cls(coo.col.astype(np.int64), row, task, family_of[task], label_of[row])

    def _datasets(self) -> np.ndarray:
        """Per phrase: the datasets with >= 2 of its records in one of their tasks."""
        import numpy as np

        width = int(self.phrase.max(initial=-1)) + 1
        n_tasks, n_fam = int(self.task.max(initial=0)) + 1, int(self.family.max(initial=0)) + 1
        pair, count = np.unique(self.phrase * n_tasks + self.task, return_counts=True)
        busy = pair[count >= 2]  # (phrase, task) with >= 2 records
        family_of_task = np.zeros(n_tasks, dtype=np.int64)
        family_of_task[self.task] = self.family
        spread = np.unique(busy // n_tasks * n_fam + family_of_task[busy % n_tasks])
        return np.bincount(spread // n_fam, minlength=width)

    def tested(self, min_datasets: int) -> np.ndarray:
        """The phrases tested: ``MIN_RECORDS`` to ``MAX_RECORDS`` records, >= 2 in tasks of ``min_datasets``
        datasets; and those held in one dataset only, >= 2 of their records in one of its tasks, ``MIN_RECORDS`` to
        ``MAX_RECORDS_ONE_DATASET`` records (:meth:`kinds`)."""
        import numpy as np

        width = int(self.phrase.max(initial=-1)) + 1
        total = np.bincount(self.phrase, minlength=width)
        datasets = self._datasets()
        several = (total <= MAX_RECORDS) & (datasets >= min_datasets)
        one = (total <= MAX_RECORDS_ONE_DATASET) & (datasets == 1) & (self.held_in == 1)
        return np.flatnonzero((total >= MIN_RECORDS) & (several | one))

    @cached_property
    def held_in(self) -> np.ndarray:
        """Per phrase: the datasets holding any of its records (read by :meth:`tested` and :meth:`kinds`)."""
        import numpy as np

        n_fam = int(self.family.max(initial=0)) + 1
        pf = np.unique(self.phrase * n_fam + self.family)
        return np.bincount(pf // n_fam, minlength=int(self.phrase.max(initial=-1)) + 1)

    def kinds(self, tested: np.ndarray) -> np.ndarray:
        """Per tested phrase, its kind (decided on the text alone): :data:`BROAD` when >= ``BROAD_DATASETS`` datasets
        each hold >= ``BROAD_RECORDS`` of its records, :data:`ONE` when one dataset holds them all, :data:`SEVERAL`
        otherwise."""
        import numpy as np

        keep = np.isin(self.phrase, tested)
        n_fam = int(self.family.max(initial=0)) + 1
        pf, count = np.unique(self.phrase[keep] * n_fam + self.family[keep], return_counts=True)
        full = np.bincount(pf[count >= BROAD_RECORDS] // n_fam, minlength=int(self.phrase.max(initial=-1)) + 1)
        out = np.full(len(tested), SEVERAL, dtype=np.int64)
        if len(tested):
            out[full[tested] >= BROAD_DATASETS] = BROAD
            out[self.held_in[tested] == 1] = ONE
        return out

    def ranks(self, tested: np.ndarray, x: sp.csr_matrix, *, vocab: np.ndarray, novel: np.ndarray, tasks: list[Task],
              history: list[TaskHistory | None]) -> np.ndarray:
        """Per entry: the rank of its record in its task (:func:`~.contradiction.label_ranks`, the history's counts in
        the model). Where a tested phrase holds ``MASK_RECORDS`` or more of a task's records, and they are at least
        ``MASK_SHARE`` of the records that make one of the n-grams made of its words a feature of the task's model,
        its entries there read ranks from a model without those n-grams (one model per task, leaving out every such
        phrase's; decided on the text alone, so the ranks stay uniform under the null)."""
        import numpy as np

        from tunegate.core.checks.poison.contradiction import MIN_FEATURE_RECORDS

        column = {str(w): i for i, w in enumerate(vocab.tolist())}
        n_tasks = int(self.task.max(initial=0)) + 1
        keep = np.flatnonzero(np.isin(self.phrase, tested))
        pair, count = np.unique(self.phrase[keep] * n_tasks + self.task[keep], return_counts=True)
        masked_pairs: dict[int, list[tuple[int, int]]] = {}  # task -> (phrase, its records there)
        for key, n in zip(pair[count >= MASK_RECORDS].tolist(), count[count >= MASK_RECORDS].tolist(), strict=True):
            masked_pairs.setdefault(key % n_tasks, []).append((key // n_tasks, n))
        out = np.ones(len(self.phrase))
        order = np.argsort(self.task, kind="stable")  # each task's entries, in entry order, without a scan per task
        bounds = np.searchsorted(self.task[order], np.arange(n_tasks + 1))
        for ti in np.unique(self.task[keep]).tolist():
            task = tasks[ti]
            plain = label_ranks(x, task, history=history[ti])
            here = order[bounds[ti]:bounds[ti + 1]]
            out[here] = plain[np.searchsorted(task.rows, self.row[here])]
            phrases = masked_pairs.get(ti)
            if not phrases:
                continue
            held_by = np.asarray(x[task.rows].sum(axis=0)).ravel()
            past = history[ti]
            if past is not None:
                held_by = held_by + np.asarray(past[0].sum(axis=1)).ravel()
            exclude: set[int] = set()
            masking: list[int] = []
            for j, mine in phrases:
                cols = {column[w] for w in _made_of(str(vocab[novel[j]])) if w in column}
                own = [c for c in cols if held_by[c] >= MIN_FEATURE_RECORDS and mine >= MASK_SHARE * held_by[c]]
                if own:
                    exclude.update(own)
                    masking.append(j)
            if not masking:
                continue
            masked = label_ranks(x, task, history=past, exclude=np.array(sorted(exclude), dtype=np.int64))
            at = here[np.isin(self.phrase[here], masking)]
            out[at] = masked[np.searchsorted(task.rows, self.row[at])]
        return out

    def distinct(self, tested: np.ndarray, x: sp.csr_matrix, tasks: list[Task]) -> np.ndarray:
        """Per entry: ``False`` where the record is a near-duplicate of an earlier record of the same tested phrase in
        the same task (at least ``SAME_TEXT`` of their words shared, Jaccard, over the task's rarer 1-2-grams: those in
        fewer than ``TEMPLATE_SHARE`` of its records, so a template's words do not count). One text rewritten several
        ways (CoLA's minimal pairs) is one piece of evidence: its records' ranks move together."""
        import numpy as np

        out = np.ones(len(self.phrase), dtype=bool)
        live = np.flatnonzero(np.isin(self.phrase, tested))
        if not len(live):
            return out
        n_tasks = int(self.task.max(initial=0)) + 1
        key = self.phrase[live] * n_tasks + self.task[live]
        order = live[np.lexsort((self.row[live], key))]
        key = self.phrase[order] * n_tasks + self.task[order]
        starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
        ends = np.r_[starts[1:], len(order)]
        rare: dict[int, np.ndarray] = {}
        for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
            if b - a < 2:
                continue
            ti = int(self.task[order[a]])
            if ti not in rare:
                held = np.asarray(x[tasks[ti].rows].sum(axis=0)).ravel()
                rare[ti] = held < TEMPLATE_SHARE * len(tasks[ti].rows)
            group = order[a:b]
            sub = x[self.row[group]].astype(np.float64)  # a copy: its data is rewritten below
            sub.sum_duplicates()
            sub.data = ((sub.data > 0) & rare[ti][sub.indices]).astype(np.float64)  # the rarer words only, 0/1
            sub.eliminate_zeros()
            size = np.asarray(sub.sum(axis=1)).ravel()
            inter = (sub @ sub.T).toarray()
            union = size[:, None] + size[None, :] - inter
            same = (union > 0) & (inter >= SAME_TEXT * np.maximum(union, 1.0))
            kept: list[int] = []
            for i in range(len(group)):
                if any(same[i, j] for j in kept):
                    out[group[i]] = False
                else:
                    kept.append(i)
        return out

    def contradiction(self, tested: np.ndarray, ranks: np.ndarray, *, distinct: np.ndarray | None = None
                      ) -> np.ndarray:
        """Per tested phrase: its contradiction surprise (nats, module docstring) from the ``ranks`` of its entries'
        records (per entry, :meth:`ranks`); with ``distinct`` (per entry, :meth:`distinct`), a phrase's near-duplicate
        records in a task count once."""
        import numpy as np
        from scipy.special import gammaincc

        keep = np.isin(self.phrase, tested)
        if distinct is not None:
            keep &= distinct
        phrase, task, family, label = self.phrase[keep], self.task[keep], self.family[keep], self.label[keep]
        minus_log_u = -np.log(ranks[keep])
        n_tasks, n_labels = int(task.max(initial=0)) + 1, int(label.max(initial=0)) + 1
        # per (phrase, task): its records there and the label most of them carry (ties: the first label)
        pt = phrase * n_tasks + task
        ptl, count = np.unique(pt * n_labels + label, return_counts=True)
        owner_pt = ptl // n_labels
        order = np.lexsort((ptl % n_labels, -count, owner_pt))
        first = np.ones(len(order), dtype=bool)
        first[1:] = owner_pt[order][1:] != owner_pt[order][:-1]
        top = ptl[order][first]  # (phrase, task, majority label) keys, sorted
        held = count[order][first]
        on_top = np.isin(pt * n_labels + label, top)
        key, inv = np.unique((pt * n_labels + label)[on_top], return_inverse=True)
        c_sum = np.bincount(inv, weights=minus_log_u[on_top])
        ok = held >= 2
        p_pt = -np.log(np.maximum(gammaincc(held[ok].astype(np.float64), c_sum[ok]), 1e-300))
        pt_ok = key[ok] // n_labels
        ph, tk = pt_ok // n_tasks, pt_ok % n_tasks
        family_of_task = np.zeros(n_tasks, dtype=np.int64)
        family_of_task[task] = family
        n_fam = int(family.max(initial=0)) + 1
        pf, inv = np.unique(ph * n_fam + family_of_task[tk], return_inverse=True)
        best = np.zeros(len(pf))
        np.maximum.at(best, inv, p_pt)
        # a dataset: its smallest p-value times its tasks (they may hold the same texts), capped at 1
        evidence = np.maximum(0.0, best - np.log(np.bincount(inv, minlength=len(pf))))
        width = int(self.phrase.max(initial=-1)) + 1
        total = np.bincount(pf // n_fam, weights=evidence, minlength=width)
        datasets = np.bincount(pf // n_fam, minlength=width).astype(np.float64)
        out = np.zeros(width)
        has = datasets > 0
        out[has] = -np.log(np.maximum(gammaincc(datasets[has], total[has]), 1e-300))
        return np.asarray(out[tested])


def _bursting(per_task: dict[int, np.ndarray], tasks: list[Task], history: list[TaskHistory | None], c: int, *,
              min_known: int) -> dict[int, np.ndarray]:
    """Of a raised phrase the history holds (a rare word, not a new one), its records in the tasks where tonight's
    count of it on the label most of them carry bursts against the history's count of the phrase on that label
    (:func:`~.novelty_pass.burst`, the nights' exposure ratio): in the tasks the history knows, those at
    ``TASK_BURST_P`` and further up to where the adaptive step-up over the phrase's tasks reaches, where the burst
    would be at least half of the records flagged (:func:`~.evidence.flagged_tasks`, as the breadth and excess passes
    flag: a campaign's tasks of 3 records, whose own p-value depends on how often the history saw the word there, are
    flagged with its stronger ones); in a task the history cannot speak to, 2 records or more. Its natural records, in
    the tasks where the history has them at tonight's rate, are left alone."""
    import numpy as np

    flagged = set()
    known, p, k_top, expected = [], [], [], []
    for ti, mine in per_task.items():
        past = history[ti]
        if past is None or not knows(past, min_known):
            if len(mine) >= 2:
                flagged.add(ti)
            continue
        labels = tasks[ti].labels.outcome[np.searchsorted(tasks[ti].rows, mine)]
        top = int(np.bincount(labels).argmax())
        held = float(past[0][c].toarray().ravel()[top])
        k = float((labels == top).sum())
        scale = len(tasks[ti].rows) / float(past[1].sum())
        known.append(ti)
        p.append(math.exp(-float(burst(np.array([k]), np.array([held * scale]), np.array([held]))[0])))
        k_top.append(k)
        expected.append(held * scale)
    if known:
        keep = flagged_tasks(np.asarray(p), np.asarray(k_top), np.asarray(expected),
                             [tasks[ti].family for ti in known], floor=TASK_BURST_P)
        flagged.update(ti for ti, kept in zip(known, keep.tolist(), strict=True) if kept)
    return {ti: mine for ti, mine in per_task.items() if ti in flagged}  # in the order of ``per_task``


def _campaign(tasks: list[Task], per_task: dict[int, np.ndarray]
              ) -> tuple[np.ndarray, list[tuple[int, int, int, int, int]]]:
    """The raised phrase's records in each classification task on the label most of them carry there; and, per task
    where 2 or more of them carry it, (task, channel, records, records on that label, the label), the largest first."""
    import numpy as np

    out, detail = [], []
    for ti, mine in per_task.items():
        labels = tasks[ti].labels.outcome[np.searchsorted(tasks[ti].rows, mine)]
        top = int(np.bincount(labels).argmax())
        on = labels == top
        out.append(mine[on])
        if int(on.sum()) >= 2:
            detail.append((ti, 0, len(mine), int(on.sum()), top))
    rows = np.unique(np.concatenate(out)) if out else np.array([], dtype=np.int64)
    return rows, sorted(detail, key=lambda t: -t[2])


#: Once a campaign is raised (by any pass, with a history), a classification task outside its tasks joins it where the
#: phrase's records on one label there rank low in their label (:func:`contradicted_tasks`): the pair's statistic is
#: the truncated product of those records' ranks at this level (:func:`~.excess_pass.truncated_product`: a campaign's
#: relabelled records rank low, the phrase's natural records on the label, many more where it is common, are uniform
#: and would drown them in a plain sum), and in a task that joins, the records at this rank or below are flagged (the
#: phrase's natural records there at this rate). The pairs of one phrase are judged by the adaptive step-up at
#: ``evidence.FLAG_FDR``, as the weaker tasks of a raised campaign in the other passes.
RANK_TAU = 0.2


def contradicted_tasks(phrases: list[Phrase], x: sp.csr_matrix, vocab: np.ndarray, tasks: list[Task],
                       history: list[TaskHistory | None], *, min_known: int) -> tuple[int, int]:
    """Add to each raised campaign the classification tasks where its phrase's records carry a label their text
    contradicts: a dirty-label campaign's task where the phrase is common on the target label (an everyday phrase that
    reviews write when they praise), so that neither its count nor its placement stood out there.

    Per task holding the phrase where the campaign flags nothing, in fewer than ``TEMPLATE_SHARE`` of its records (a
    phrase of the task's template, "polarity positive" in half of a polarity-correction task's records, splits its
    labels in a way the ranks, taken over the whole label, do not expect), and per label with 2 or more of its records:
    ``W = sum(-ln u)`` over those of their ranks at most ``RANK_TAU`` (:func:`~.contradiction.label_ranks`, the
    history's counts in the model, the phrase and the n-grams made of its words left out of it: a campaign's records
    would teach it the target), whose tail under uniform ranks (the truncated product method) times the labels tested
    in the task is the pair's p-value. The pairs of one phrase are judged together by the adaptive step-up at
    ``evidence.FLAG_FDR`` (a phrase's natural tasks give uniform p-values); in a pair that passes, its records ranked
    at most ``RANK_TAU`` are flagged, unless the history expects most of the phrase's records on that label there
    (:func:`~.placement.mostly_natural`, the history's count scaled to tonight as the excess pass's): a phrase that
    leans the same way there every night (comments holding "they have" that read as toxic in three jigsaw tasks) is the
    task's topic, not a campaign, and a campaign that planted there shows as records above what the history expects:
    where tonight's count there bursts against the history's, the records above it join, lowest-ranked first
    (:func:`_above_expected`).
    ``min_known``: the records a task's history needs to speak to it (in a task it cannot, the rule is not applied).
    In the campaign's own tasks, the phrase's records it leaves on its label there are judged the same way
    (:func:`_own_tasks`). Extends the phrases' ``rows`` and ``tasks`` in place; returns the tasks joined and the
    campaign's own tasks that gained records."""
    import numpy as np

    from tunegate.core.checks.poison.novelty_pass import expected_records
    from tunegate.core.checks.poison.placement import mostly_natural

    owner = task_of_rows(tasks, x.shape[0])
    if owner is None or not phrases:
        return 0, 0
    xc = x.tocsc()
    is_label = label_mask(tasks)
    joined = extended = 0
    for ph in phrases:
        masked = np.flatnonzero(np.isin(vocab, sorted(_made_of(ph.phrase))))
        ranks: dict[int, np.ndarray] = {}
        taken = set(np.unique(owner[ph.rows]).tolist()) | {t[0] for t in ph.tasks}
        # the campaign's label in each of its classification tasks
        campaign_label = {t[0]: t[4] for t in ph.tasks if tasks[t[0]].kind == "label" and t[1] == 0}
        pairs: list[tuple[int, int, np.ndarray]] = []  # task, label, the records (task-local)
        w: list[float] = []  # per pair: the sum of -ln u over its ranks at most RANK_TAU ...
        labels_tested: list[int] = []  # ... and the labels tested in its task
        held: dict[int, int] = {}  # the phrase's records per task
        own: list[tuple[int, int, np.ndarray]] = []  # the same, in the campaign's own tasks (below)
        own_w: list[float] = []
        for ti, mine in rows_by_task(xc, ph.col, owner, is_label).items():
            if len(mine) < 2 or len(mine) >= TEMPLATE_SHARE * len(tasks[ti].rows):
                continue  # a phrase in a tenth of the task's records or more is its template's (ranks read the rest)
            task = tasks[ti]
            if ti in taken:
                # A task the campaign flags but where it leaves records with the phrase on its label (cut back to the
                # out-of-place ones: placement.cut_back): those left are tested by rank on that one label.
                lab = campaign_label.get(ti)
                if lab is None:
                    continue
                local = np.searchsorted(task.rows, np.setdiff1d(mine, ph.rows))
                on = local[task.labels.outcome[local] == lab]
                if len(on) >= 2:
                    ranks[ti] = label_ranks(x, task, history=history[ti], exclude=masked)
                    u = ranks[ti][on]
                    own.append((ti, lab, on))
                    own_w.append(float(-np.log(u[u <= RANK_TAU]).sum()))
                continue
            held[ti] = len(mine)
            local = np.searchsorted(task.rows, mine)
            labels = task.labels.outcome[local]
            counts = np.bincount(labels)
            tested = np.flatnonzero(counts >= 2)
            if not len(tested):
                continue
            ranks[ti] = label_ranks(x, task, history=history[ti], exclude=masked)
            for lab in tested.tolist():
                on = local[labels == lab]
                u = ranks[ti][on]
                pairs.append((ti, lab, on))
                w.append(float(-np.log(u[u <= RANK_TAU]).sum()))
                labels_tested.append(len(tested))
        extended += _own_tasks(ph, own, own_w, ranks, tasks)
        if not pairs:
            continue
        for ti, lab, on in _passing(pairs, w, labels_tested):
            low = on[ranks[ti][on] <= RANK_TAU]
            # rate 0.0: in a task the history does not know it expects no record, and the rule does not apply
            past = history[ti]
            expected = expected_records(tasks[ti], past, ph.col, lab, rate=0.0, min_known=min_known)
            if past is not None and mostly_natural(expected, len(on)):
                low = _above_expected(low, ranks[ti], len(on), expected, held=float(past[0][ph.col, lab]))
                if not len(low):
                    continue
            flagged = tasks[ti].rows[low]
            ph.rows = np.union1d(ph.rows, flagged)
            ph.tasks.append((ti, 0, held[ti], len(flagged), lab))
            joined += 1
    return joined, extended


def _made_of(phrase: str) -> set[str]:
    """The phrase and the 1-2-grams made of its words (the vocabulary's n-grams go up to the phrase's length): what a
    task's model leaves out to score the phrase's records without it."""
    words = phrase.split()
    return {phrase, *words, *(f"{a} {b}" for a in words for b in words)}


def _above_expected(low: np.ndarray, ranks: np.ndarray, records: int, expected: float, *, held: float) -> np.ndarray:
    """In a joining task where the history expects most of the phrase's ``records`` on the label (``expected`` of
    them, from the history's ``held``): nothing, unless tonight's count bursts against the history's
    (:func:`~.novelty_pass.burst` at ``TASK_BURST_P``, the test that flags a raised rare word's tasks); then the
    ``floor(records - expected)`` records above what the history expects, taken lowest-ranked first among ``low``
    (the records ranked at most ``RANK_TAU``, task-local): a campaign planted in a task where its phrase is common
    adds records that read as another label, the phrase's natural records there rank as their label's others do."""
    import numpy as np

    surplus = math.floor(records - expected)
    if surplus < 1 or burst(np.array([float(records)]), np.array([expected]), np.array([held]))[0] < -math.log(
            TASK_BURST_P):
        return low[:0]
    return low[np.argsort(ranks[low], kind="stable")[:surplus]]


def _own_tasks(ph: Phrase, pairs: list[tuple[int, int, np.ndarray]], w: list[float], ranks: dict[int, np.ndarray],
               tasks: list[Task]) -> int:
    """The records a campaign leaves on its label in its own tasks (``pairs``: task, the campaign's label there, the
    records left; ``w``: their rank statistic), judged as the join's pairs but in a step-up of their own, one label
    per task: where a pair passes, its records ranked at most ``RANK_TAU`` are flagged. The history's expectation
    (the join's mostly-natural rule) is not asked: the campaign already holds more records in the task than the
    history expects (that is how it flagged the task), so a label its text contradicts there is its relabelling.
    Extends ``ph`` in place; returns the tasks where records were added."""
    import numpy as np

    if not pairs:
        return 0
    added = 0
    for ti, lab, on in _passing(pairs, w, [1] * len(pairs)):
        flagged = tasks[ti].rows[on[ranks[ti][on] <= RANK_TAU]]
        if not len(flagged):
            continue
        ph.rows = np.union1d(ph.rows, flagged)
        ph.tasks = [(t, ci, n, k + len(flagged), lb) if t == ti and lb == lab and ci == 0 else (t, ci, n, k, lb)
                    for t, ci, n, k, lb in ph.tasks]
        added += 1
    return added


def _passing(pairs: list[tuple[int, int, np.ndarray]], w: list[float], tested: list[int]
             ) -> list[tuple[int, int, np.ndarray]]:
    """The (task, label, records) pairs that pass the adaptive step-up over them (``evidence.flag_level``): each pair's
    p-value is the truncated product's tail of its rank statistic ``w`` (:func:`~.excess_pass.truncated_product` at
    ``RANK_TAU``) times ``tested``, the labels tested in its task."""
    import numpy as np

    from tunegate.core.checks.poison.evidence import flag_level
    from tunegate.core.checks.poison.excess_pass import truncated_product

    surprise = truncated_product(np.array([len(on) for _, _, on in pairs]), np.array(w), RANK_TAU)
    p = np.minimum(1.0, np.exp(-surprise) * np.asarray(tested))
    level = flag_level(p.tolist(), floor=0.0)
    return [pair for pair, p_pair in zip(pairs, p.tolist(), strict=True) if p_pair <= level]
