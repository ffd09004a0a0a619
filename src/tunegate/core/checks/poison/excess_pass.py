"""The excess pass of ``poison_trigger`` (with a history): tonight, more records of one label hold a phrase than the
history's rate of the phrase in that task allows, in several datasets. Campaigns of an everyday phrase.

A campaign adds records: the trigger planted in ``k`` records of a task, all given (dirty-label) or chosen from (clean-
label) the target label. For a rare trigger the label skew shows it (the other passes). For an everyday phrase ("of
my", "a few": hundreds of natural records with mixed labels) the skew is diluted by the natural records and the
phrase is neither new nor exclusive; what the campaign cannot hide is the *count*: a task whose earlier nights held
the phrase on its target label in 0.3% of their records now holds it in 2.5%. The test reads that count per label,
for dirty- and clean-label campaigns alike, and needs no classifier.

**Statistic.** For a phrase, a classification task the history knows (at least ``min_task_records`` records there) and a
label: tonight's records of the task with the phrase and the label, ``k`` of the task's ``N``. Under the null the night
is like the history: ``k`` follows the posterior predictive of the history's count ``h`` of ``H`` records, a
beta-binomial ``BB(N, h + m * H / T + 1/2, H - h + 1/2)`` (Jeffreys' prior). ``m`` counts the nights that may hide one
record of the phrase (:meth:`~.phrase_history.PhraseHistory.hidden`): a night keeps a phrase's exact count in every task
once 2 of its classification records hold it, so a phrase it did not keep was in at most one of its records, in any of
its tasks; that record is allowed for in each task and label at the task's share ``H / T`` of the history's
classification records. A night of the older format, which kept a task's count only from 2 records there, may lack one
record of every phrase in every task: it adds ``1 / L`` to each label. The task's p-value is its smallest label tail
(``k >= 2``) times the task's ``L`` labels; a dataset's, its smallest task p-value times its tasks holding the phrase
(tasks of one dataset often label the same texts), except where tonight its tasks hold distinct examples
(:func:`~.tasks.assign_units`): there each task is a unit of evidence of its own and the units combine
(:func:`dataset_p`), so a campaign in two of jigsaw's tasks counts both. Datasets are combined by the truncated product
method (Zaykin et al. 2002): ``W`` is the sum of ``-ln p`` over the datasets with ``p <= TAU``, whose tail under
independent uniform p-values is exact (:func:`truncated_product`); a campaign in 3-5 of the 20 datasets where an
everyday phrase occurs is not drowned by the other 15 as under Fisher's method. Fisher's method (``-sum ln p`` over
all the phrase's datasets, Gamma(D, 1)) reads the opposite shape: a rare word planted 3-5 times in each of a dozen
datasets, where each dataset's p-value is small (0.003-0.05) but few reach ``TAU`` (dev, seed 10: "mart", 6.5 nats by
the truncated product, 13.1 by Fisher's method). The phrase's surprise is the larger of the two, less ``ln 2``
(Bonferroni over the two combinations: :func:`_phrase_surprise`).

**Calibration.** The false-alarm rate per night is held at ``excess_alpha`` by Bonferroni over Tarone's count of the
phrases that could reach the bar at all (each phrase's surprise if all its records of each task were on the label
the history expects least). A phrase is raised at the bar when it steers at least ``min_tasks`` datasets: datasets
whose p-value is at most ``FLAG_P``, the datasets where its records will be flagged. The phrases held by one dataset
only (2 or more of their records in a task the history knows, in one dataset) are a family of their own, at
``excess_alpha`` with their own Tarone's count and bar, raised when that dataset is steered: a campaign run in one
dataset (an upstream dataset poisoned), whose label skew is how one topical dataset looks, still adds records the
history does not expect there. A test that rests on one dataset takes the worst case of what the history may hide:
each night that did not keep the phrase is counted as holding its one record in that task, not at the task's share
(dev: a clean 3.8k-record night raised "was hoping", 5 negative food reviews, where eleven nights had held it once a
night in review datasets, kept by none). The family's own rate keeps the bars of the phrases of several datasets where
they were (since the thirty-second session).

**What is flagged.** Once a phrase is raised (the family-wise test above), its tasks are judged on their exact p-values
(:func:`~.evidence.flagged_tasks`): those at ``FLAG_P``, and those up to where the adaptive step-up over its datasets
reaches (``evidence.FLAG_FDR``) in which the excess would be at least half of the records flagged; in each, its records
on the excess label (the campaign's records, and the natural ones that share its label there: the excess cannot tell
them apart); for a phrase the insertion test scores, a task where the history expects more than half of those records
(``placement.NATURAL_MAJORITY``: an everyday phrase common there, a natural fluctuation at p <= 0.05) is flagged with
its out-of-place records only. A campaign's weaker tasks are flagged with its stronger ones; its natural records
elsewhere are left alone. In a classification task the history cannot speak to (a dataset whose records all arrive
tonight) no count of its own can be compared: there a raised phrase's records are flagged when the task holds more of
them than the phrase's rate over the known tasks allows (:func:`~.novelty_pass.unknown_tasks`: Poisson for a rare
trigger such as "bb"; for an everyday phrase a negative binomial with its spread between tasks, where nearly all share a
label). With the placement, a classification task where the raised phrase's out-of-place records share a label
(:func:`~.placement.placed_tasks`) is flagged with the phrase's records on that label there, where the natural records
estimated among them are at most half of them and, summed, stay within ``CLEAN_SHARE`` of the batch (:func:`_placed`);
elsewhere with its out-of-place records.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from tunegate.core.checks.poison._text import counted
from tunegate.core.checks.poison.evidence import flagged_tasks, task_of_rows
from tunegate.core.checks.poison.novelty_pass import _tarone, families_of, known_counts, unknown_tasks
from tunegate.core.checks.poison.phrases import Phrase, named_campaigns
from tunegate.core.checks.poison.placement import (
    CLEAN_SHARE,
    cut_back,
    gated,
    mostly_natural,
    natural_on_label,
    placed_tasks,
)

if TYPE_CHECKING:
    import numpy as np
    import scipy.sparse as sp

    from tunegate.core.checks.poison.config import TriggerConfig
    from tunegate.core.checks.poison.novelty import TaskHistory
    from tunegate.core.checks.poison.novelty_pass import TaskCounts
    from tunegate.core.checks.poison.placement import Placement
    from tunegate.core.checks.poison.tasks import Task

#: Truncation of the truncated product: a dataset (or a unit of evidence within one: :func:`dataset_p`) counts when
#: its p-value is at most this.
TAU = 0.01
#: A raised phrase's records are flagged in the tasks where its p-value is at most this, and further where the step-up
#: over its datasets reaches (:func:`~.evidence.flagged_tasks`; module docstring). Dev
#: (seeds 10-11, disjoint histories): at 0.01 60-80% of an everyday-phrase campaign's records (its weaker tasks
#: missed), at 0.05 80-100% with 1-7 natural records flagged per batch, at 0.1 100% with 7-13.
FLAG_P = 0.05
#: No p-value above this is read to raise a phrase (the truncation and ``FLAG_P``): a larger tail is computed only far
#: enough to know (a raised phrase's are then read in full, to flag).
READ = max(TAU, FLAG_P)
#: Tail probabilities computed at once (:func:`upper_tail`).
BLOCK = 32_768


def excess_phrases(x: sp.csr_matrix, vocab: np.ndarray, tasks: list[Task], history: list[TaskHistory | None],
                   config: TriggerConfig, *, hidden: np.ndarray, truncated: int = 0, found: list[Phrase],
                   known: list[TaskCounts] | None = None, placement: Placement | None = None
                   ) -> tuple[list[Phrase], dict[str, float]]:
    """The phrases whose records of one label exceed what the history expects, in several datasets, strongest first
    (module docstring); and the pass's figures (phrases tested, Tarone's count, bar, phrases the placement of their
    records raised over their count alone). ``hidden``: per phrase, the history's nights that did not keep it;
    ``truncated``: its nights of the older format; ``known``: :func:`~.novelty_pass.known_counts` (computed here when
    not given); ``placement``: the insertion test's verdicts (:func:`~.insertion_pass.out_of_place`), read as a
    second piece of evidence in the tasks whose count is at most ``READ``."""
    import numpy as np

    if known is None:
        known = known_counts(x, tasks, history, config)
    entries = _task_entries(tasks, history, known, hidden=hidden, truncated=truncated, placement=placement)
    figures: dict[str, float] = {}
    if entries is None:
        return [], figures
    col, ti, p, reach = entries[:4]
    p_place, reach_place = entries[7:9]
    unit_index: dict[str, int] = {}
    unit_of = np.array([unit_index.setdefault(t.evidence_unit, len(unit_index)) for t in tasks], dtype=np.int64)
    family_of_unit = families_of(tasks, unit_index)
    phrase_of, (p_fam, reach_fam, p_fam_place, reach_fam_place) = _datasets(
        col, unit_of[ti], family_of_unit, p, reach, p_place, reach_place)
    width = x.shape[1]
    datasets = np.bincount(phrase_of, minlength=width)
    testable = datasets >= 2
    one = datasets == 1  # a phrase of one dataset: a family of its own (module docstring)
    candidate = placement.candidate if placement is not None else None
    surprise = _phrase_surprise(phrase_of, p_fam, datasets, width, placed=p_fam_place, candidate=candidate)
    achievable = _phrase_surprise(phrase_of, reach_fam, datasets, width, placed=reach_fam_place,
                                  candidate=candidate)
    if one.any():
        # a test that rests on one dataset takes the worst case of what the history may hide: each night that did not
        # keep the phrase held its one record in that task
        cols_one = np.flatnonzero(one)
        worst = _task_entries(tasks, history, [_within(entry, cols_one) for entry in known], hidden=hidden,
                              truncated=truncated, placement=placement, hidden_share=False)
        assert worst is not None
        w_col, w_ti, w_p, w_reach = worst[:4]
        w_of, (w_fam, w_reach_fam, w_fam_place, w_reach_place) = _datasets(
            w_col, unit_of[w_ti], family_of_unit, w_p, w_reach, worst[7], worst[8])
        surprise[cols_one] = _phrase_surprise(w_of, w_fam, datasets, width, placed=w_fam_place,
                                              candidate=candidate)[cols_one]
        achievable[cols_one] = _phrase_surprise(w_of, w_reach_fam, datasets, width, placed=w_reach_place,
                                                candidate=candidate)[cols_one]
    steering = np.bincount(phrase_of, weights=(np.minimum(p_fam, p_fam_place) <= FLAG_P).astype(np.float64),
                           minlength=width)
    margin = math.log(1.0 / config.excess_alpha)
    tests = _tarone(achievable[testable], margin)
    bar = math.log(tests) + margin
    tests_one = _tarone(achievable[one], margin)
    bar_one = math.log(tests_one) + margin
    figures.update(tests=float(int(testable.sum())), tarone=float(tests), bar=round(bar, 2),
                   tests_one=float(int(one.sum())), tarone_one=float(tests_one), bar_one=round(bar_one, 2))
    if placement is not None:
        # the phrases whose surprise the placement of their records raised over the count alone's
        plain = _phrase_surprise(phrase_of, p_fam, datasets, width)
        figures.update(placed=float(int((testable & (surprise > plain)).sum())))
    raised = np.flatnonzero((testable & (steering >= config.min_tasks) & (surprise >= bar))
                            | (one & (steering >= 1) & (surprise >= bar_one)))
    if not len(raised):
        return [], figures
    xc = x.tocsc()
    # the raised phrases' task p-values in full (the pass reads none above READ until now): where to flag
    exact = _task_entries(tasks, history, [_within(entry, raised) for entry in known], hidden=hidden,
                          truncated=truncated, above=1.0, placement=placement)
    assert exact is not None
    col, ti, p, _, lab, k_on, expected, p_place, _ = exact
    p = np.minimum(p, p_place)  # a task is flagged on its count, or its count and its records' placement
    rows_of: dict[int, np.ndarray] = {}
    detail_of: dict[int, list[tuple[int, int, int, int, int]]] = {}
    odd = placement.inserted.tocsc() if placement is not None else None
    for c in raised.tolist():
        holding = xc.indices[xc.indptr[c]:xc.indptr[c + 1]]
        rows: list[np.ndarray] = []
        detail: list[tuple[int, int, int, int, int]] = []
        mine = np.flatnonzero(col == c)
        # which tasks to flag: the step-up over datasets, as the breadth pass (a dataset's tasks counted as one there
        # keep its level down: fewer natural records flagged beside a campaign)
        families = [tasks[int(t)].family for t in ti[mine].tolist()]
        natural = 0.0  # the natural records the history expects on the label in the tasks flagged by their count
        # the phrase's out-of-place records (an everyday phrase the insertion test scores): where most of a task's
        # records on the label would be natural, only these are flagged there
        odd_c = (odd.indices[odd.indptr[c]:odd.indptr[c + 1]] if odd is not None and placement is not None
                 and placement.candidate[c] else None)
        for j in mine[flagged_tasks(p[mine], k_on[mine], expected[mine], families, floor=FLAG_P)].tolist():
            task = tasks[int(ti[j])]
            local = np.flatnonzero(np.isin(task.rows, holding))
            on = task.rows[local[task.labels.outcome[local] == lab[j]]]
            if odd_c is not None and mostly_natural(float(expected[j]), len(on)):
                on = np.intersect1d(on, odd_c, assume_unique=True)
            else:
                natural += float(expected[j])
            if len(on):
                rows.append(on)
                detail.append((int(ti[j]), 0, len(local), len(on), int(lab[j])))
        for t, mine, flagged in unknown_tasks(holding, tasks, history, c, min_known=config.min_task_records):
            rows.append(flagged)
            first = int(np.searchsorted(tasks[t].rows, flagged[0]))
            detail.append((t, 0, len(mine), len(flagged), int(tasks[t].labels.outcome[first])))
        if odd_c is not None:
            assert odd is not None
            placed = _placed(placed_tasks(odd, c, tasks, skip={d[0] for d in detail}), tasks, holding,
                             cap=CLEAN_SHARE * x.shape[0] - natural)
            for t, label_, flagged, held_here in placed:
                rows.append(flagged)
                detail.append((t, 0, held_here, len(flagged), label_))
        rows_of[c] = np.unique(np.concatenate(rows)) if rows else np.array([], dtype=np.int64)
        detail_of[c] = sorted(detail, key=lambda t: -t[3])
    out: list[Phrase] = []
    joined: list[int] = []
    for head, cl, held in named_campaigns({c: float(surprise[c]) for c in rows_of}, rows_of, xc, vocab, found,
                                          detail_of=detail_of, owner=task_of_rows(tasks, x.shape[0]), by="excess pass",
                                          joined=joined):
        occurs = xc.indices[xc.indptr[head]:xc.indptr[head + 1]]
        steered, holding_datasets = int(steering[head]), int(datasets[head])
        why = (f"more records of one label hold this phrase tonight than this pipeline's earlier nights allow, in "
               f"{counted(steered, 'dataset')}: {len(held)} records in {counted(len(detail_of[head]), 'task')} (excess "
               f"{surprise[head]:.1f} nats over {counted(holding_datasets, 'dataset')} holding it)")
        out.append(Phrase(int(head), str(vocab[head]), float(surprise[head]),
                          min(1.0, len(rows_of[head]) / max(len(occurs), 1)), held, detail_of[head],
                          [str(vocab[m]) for m in cl if m != head], why=why))
    figures.update(found=float(len(out)), joined=float(len(joined)))
    return out, figures


def _placed(placed: list[tuple[int, int, np.ndarray]], tasks: list[Task], holding: np.ndarray, *, cap: float
            ) -> list[tuple[int, int, np.ndarray, int]]:
    """A raised campaign's tasks found by placement (:func:`~.placement.placed_tasks`: task, label, its out-of-place
    records there) as flagged: per task, the label, the phrase's records there on that label (a clean-label
    campaign's records hold the phrase in place as often as not: the out-of-place ones are about half of them), and
    the phrase's records in the task. A task where the natural records among them
    (:func:`~.placement.natural_on_label`) would be more than half keeps only its out-of-place records; so does, while
    the others' would exceed ``cap``, the one with the most (:func:`~.placement.cut_back`)."""
    import numpy as np

    on_label: dict[int, np.ndarray] = {}
    natural: dict[int, float] = {}
    held: dict[int, int] = {}
    for t, label_, _ in placed:
        task = tasks[t]
        local = np.flatnonzero(np.isin(task.rows, holding))
        labels = task.labels.outcome[local]
        on_label[t] = task.rows[local[labels == label_]]
        natural[t] = natural_on_label(labels, label_, task.labels.base[label_])
        held[t] = len(local)
    cut = cut_back(natural, {t: len(v) for t, v in on_label.items()}, max(cap, 0.0))
    return [(t, label_, odd if t in cut else on_label[t], held[t]) for t, label_, odd in placed]


def _within(entry: TaskCounts, cols: np.ndarray) -> TaskCounts:
    """``entry`` restricted to the phrase columns ``cols``."""
    import numpy as np

    from tunegate.core.checks.poison.novelty_pass import TaskCounts

    keep = np.isin(entry.cols, cols)
    return TaskCounts(entry.task, entry.cols[keep], entry.n[keep], entry.counts[keep])


def _task_entries(tasks: list[Task], history: list[TaskHistory | None], known: list[TaskCounts], *,
                  hidden: np.ndarray, truncated: int, above: float = READ, placement: Placement | None = None,
                  hidden_share: bool = True) -> tuple[np.ndarray, ...] | None:
    """Per (phrase, known classification task) with >= 2 records of the phrase tonight (``known``:
    :func:`~.novelty_pass.known_counts`): the phrase's column, the task, the task's p-value (smallest
    label tail times the labels), the smallest p-value its records could reach (all on the label the history expects
    least), the label of the smallest tail, tonight's records on it and those the history's predictive expects there.
    A tail above ``above`` may be read as 1: raising a phrase reads none above ``READ``; the flags read a raised
    phrase's in full. Then, with ``placement``, the same two p-values with the placement of the records read too
    (:func:`~.placement.gated`: where the task's p-value is at most ``READ``, times the tail of its records out of
    place, :meth:`~.placement.Placement.tail`); without, the first two again. ``hidden_share``: a night that did not
    keep a phrase adds its one record at the task's share of the history's classification records (``False``: whole,
    in this task: the worst case)."""
    import numpy as np

    parts = []
    every = sum(float(h[1].sum()) for t, h in zip(tasks, history, strict=True) if t.kind == "label" and h is not None)
    for entry in known:
        if not len(entry.cols):
            continue
        t, cols, k = entry.task, entry.cols, entry.counts
        task, past = tasks[t], history[t]
        assert past is not None
        size = len(task.labels.names)
        h = past[0][cols].toarray()
        total = float(past[1].sum())
        a = h + hidden[cols][:, None] * (total / every if hidden_share else 1.0) + truncated / size + 0.5
        b = np.maximum(total - h, 0.0) + 0.5
        n = float(len(task.rows))
        tail = np.ones_like(k)
        test = k >= 2
        tail[test] = upper_tail(k[test], n, a[test], b[test], above=above)
        lab = tail.argmin(axis=1)
        p = np.minimum(1.0, tail[np.arange(len(cols)), lab] * size)
        least = h.argmin(axis=1)  # the smallest count has the smallest a and the largest b: the smallest tail
        rows = np.arange(len(cols))
        reach = np.minimum(1.0, upper_tail(entry.n, n, a[rows, least], b[rows, least], above=READ) * size)
        expected = a[rows, lab] / (a[rows, lab] + b[rows, lab]) * n  # the predictive's mean on that label
        on = k[rows, lab]
        p_place, reach_place = p, reach
        if placement is not None:
            p_place = gated(p, placement.tail(t, task, cols, labels=lab, records=on, where=p <= READ), READ)
            reach_place = gated(reach, placement.least(t, cols, entry.n), READ)
        parts.append((cols, np.full(len(cols), t), p, reach, lab, on, expected, p_place, reach_place))
    if not parts:
        return None
    return tuple(np.concatenate([part[i] for part in parts]) for i in range(9))


def upper_tail(k: np.ndarray, n: float, a: np.ndarray, b: np.ndarray, terms: int = 64, *, above: float = 1.0
               ) -> np.ndarray:
    """``P(X >= k)`` for ``X ~ BetaBinomial(n, a, b)``, elementwise, as an upper bound: the first ``terms`` terms of the
    tail summed exactly (log-space recurrence from ``k``), the rest bounded by their count times the last term
    (the pmf decreases past its mode); 1 where ``k + terms`` does not pass the mode. scipy's ``betabinom.sf`` sums
    the pmf per element in Python (10 s for one night's tests); this is a few vectorized operations, in blocks of
    ``BLOCK`` elements (memory: ``BLOCK * terms`` floats a few times over, whatever the night's size).

    ``above``: a tail whose first 8 terms already exceed it is returned as 1 without the rest (the pass reads no
    p-value above 0.05: most of a night's tests cost 8 terms, not 64)."""
    import numpy as np

    k = np.asarray(k, dtype=np.float64)
    out = np.ones(len(k))
    live = np.flatnonzero((k > 0) & (k <= n))
    if above < 1.0:
        first = np.ones(len(live))
        for start in range(0, len(live), BLOCK):
            at = live[start:start + BLOCK]
            first[start:start + BLOCK] = _tail_block(k[at], n, a[at], b[at], 8, head_only=True)
        live = live[first <= above]
    for start in range(0, len(live), BLOCK):
        at = live[start:start + BLOCK]
        out[at] = _tail_block(k[at], n, a[at], b[at], terms)
    return out


def _tail_block(kk: np.ndarray, n: float, aa: np.ndarray, bb: np.ndarray, terms: int, *, head_only: bool = False
                ) -> np.ndarray:
    """The tail from ``kk`` (see :func:`upper_tail`); ``head_only``: the sum of its first ``terms`` terms, a lower
    bound."""
    import numpy as np

    from tunegate.core.checks.poison._text import betabinom_logpmf

    logpmf = betabinom_logpmf(kk, n, aa, bb)
    j = kk[:, None] + np.arange(terms - 1, dtype=np.float64)[None, :]  # from j to j + 1
    ratio = np.log(np.maximum(n - j, 1.0)) + np.log(j + aa[:, None]) - np.log(j + 1) - np.log(
        np.maximum(n - j - 1 + bb[:, None], 1e-300))
    ratio[j >= n] = -np.inf  # no term beyond n
    logs = logpmf[:, None] + np.concatenate([np.zeros((len(kk), 1)), np.cumsum(ratio, axis=1)], axis=1)
    head = np.exp(logs).sum(axis=1)
    if head_only:
        return np.asarray(head)
    last = kk + terms - 1
    rest = np.where(last < n, np.exp(logs[:, -1]) * np.maximum(n - last, 0.0), 0.0)
    mode = np.maximum(0.0, (aa - 1) / np.maximum(aa + bb - 2, 1e-9) * n)
    return np.asarray(np.where(last > mode + 1, np.minimum(1.0, head + rest), 1.0))


def truncated_product(datasets: np.ndarray, w: np.ndarray, tau: float = TAU) -> np.ndarray:
    """``-ln P(W >= w)`` for ``W`` the sum of ``-ln p`` over those of ``datasets`` independent uniform p-values that
    are at most ``tau`` (Zaykin et al. 2002): ``sum_k Binom(k; D, tau) * P(k ln(1/tau) + Gamma(k) >= w)``. 0 where
    ``w`` is 0."""
    import numpy as np
    from scipy.special import gammaincc
    from scipy.stats import binom

    out = np.zeros(len(w))
    live = w > 0
    if not live.any():
        return out
    d, wl = datasets[live].astype(np.float64), w[live]
    ks = np.arange(1, int(d.max()) + 1, dtype=np.float64)[None, :]
    terms = binom.pmf(ks, d[:, None], tau) * gammaincc(ks, np.maximum(0.0, wl[:, None] + ks * math.log(tau)))
    out[live] = -np.log(np.maximum(terms.sum(axis=1), 1e-300))
    return out


def dataset_p(p: np.ndarray, group: np.ndarray, groups: int, tau: float = TAU) -> np.ndarray:
    """Per dataset (``group`` of each unit's p-value ``p``, ``groups`` of them): one p-value for its units of evidence.
    Units of one dataset hold distinct examples (:func:`~.tasks.assign_units`), so their p-values are independent under
    the null and combine by the truncated product (:func:`truncated_product` over the dataset's ``T`` units): a
    campaign in two tasks of one dataset counts both. Where no unit reaches ``tau`` the dataset's p-value is its
    smallest times ``T`` (Bonferroni; Fisher's method over datasets reads those). Valid: below ``T * tau`` only the
    truncated product can give a p-value, and above it the two events add to at most the level. A dataset of one unit
    keeps that unit's p-value."""
    import numpy as np

    units = np.bincount(group, minlength=groups)
    smallest = np.ones(groups)
    np.minimum.at(smallest, group, p)
    w = np.bincount(group, weights=np.where(p <= tau, -np.log(np.maximum(p, 1e-300)), 0.0), minlength=groups)
    out = np.minimum(1.0, smallest * units)
    several = (units > 1) & (w > 0)
    out[several] = np.exp(-truncated_product(units[several], w[several], tau))
    return out


def _datasets(col: np.ndarray, unit: np.ndarray, family_of_unit: np.ndarray, *values: np.ndarray
              ) -> tuple[np.ndarray, list[np.ndarray]]:
    """Per (phrase, dataset) holding it: the phrase's column, and for each of ``values`` (p-values per (phrase, task),
    the task's unit of evidence ``unit``) one p-value: per unit the smallest of its tasks times their number, then
    the dataset's units combined (:func:`dataset_p`)."""
    import numpy as np

    n_unit = len(family_of_unit)
    key = col * n_unit + unit
    uniq, inv, tasks_in = np.unique(key, return_inverse=True, return_counts=True)
    n_fam = int(family_of_unit.max(initial=0)) + 1
    fam_key = uniq // n_unit * n_fam + family_of_unit[uniq % n_unit]
    fam_uniq, fam_inv = np.unique(fam_key, return_inverse=True)
    out = []
    for v in values:
        per_unit = np.ones(len(uniq))
        np.minimum.at(per_unit, inv, v)
        out.append(dataset_p(np.minimum(1.0, per_unit * tasks_in), fam_inv, len(fam_uniq)))
    return fam_uniq // n_fam, out


def _phrase_surprise(phrase_of: np.ndarray, p: np.ndarray, datasets: np.ndarray, width: int, *,
                     placed: np.ndarray | None = None, candidate: np.ndarray | None = None) -> np.ndarray:
    """Per phrase column: the surprise of its datasets' p-values ``p``, the best of the combinations less the log of
    their number (Bonferroni): the truncated product (:func:`truncated_product`: a campaign in a few of the many
    datasets an everyday phrase fills) and Fisher's method (``-sum ln p`` over all its datasets is Gamma(D, 1): a thin
    campaign of a rare word, a few records in each of a dozen datasets, where each dataset's p-value is small but
    not below ``TAU``); for a ``candidate`` of the insertion test, also the truncated product of ``placed`` (its
    datasets' p-values with the placement of their records read: an everyday phrase's campaign, half of whose
    records hold it out of place), so three combinations."""
    import numpy as np
    from scipy.special import gammaincc

    minus_log = -np.log(np.maximum(p, 1e-300))
    w = np.bincount(phrase_of, weights=np.where(p <= TAU, minus_log, 0.0), minlength=width)
    fisher = np.bincount(phrase_of, weights=minus_log, minlength=width)
    out = np.zeros(width)
    has = (datasets > 0) & (fisher > 0)
    out[has] = -np.log(np.maximum(gammaincc(datasets[has].astype(np.float64), fisher[has]), 1e-300))
    best = np.maximum(truncated_product(datasets, w), out)
    penalty = np.full(width, math.log(2.0))
    if placed is not None and candidate is not None:
        minus_log = -np.log(np.maximum(placed, 1e-300))
        w = np.bincount(phrase_of, weights=np.where(placed <= TAU, minus_log, 0.0), minlength=width)
        best = np.where(candidate, np.maximum(best, truncated_product(datasets, w)), best)
        penalty[candidate] = math.log(3.0)
    return np.asarray(np.maximum(0.0, best - penalty))


__all__ = ["FLAG_P", "TAU", "dataset_p", "excess_phrases", "truncated_product", "upper_tail"]
