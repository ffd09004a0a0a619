"""The novelty pass of ``poison_trigger`` (with a history): label skews that the pipeline's earlier nights do not
explain, tested with a calibrated tail bound instead of fitted thresholds.

For a phrase and a classification task where at least 2 records hold it, the statistic of the task is the
largest binomial log-likelihood ratio ``n * KL(k/n || q)`` over the labels (``k >= 2`` records with the label,
``q`` the history's expected rate: :func:`~.novelty.history_rates`), kept when it reaches ``novelty_task_nats``
and 0 otherwise (a truncated statistic: the many tasks where a phrase has a few records cost nothing). Tasks of
one dataset often label the same texts (P3 templates, HatEval's three dimensions): such a dataset is one *unit of
evidence* and contributes the largest statistic of its tasks; a dataset whose tasks hold distinct examples tonight
(SuperNI's jigsaw tasks) has each task as a unit (:func:`~.tasks.assign_units`). A phrase's statistic ``S`` is the sum
over units.

**Calibration.** Under the null hypothesis, each label count of the phrase's records in a task follows the
history's posterior predictive: a beta-binomial with the history's rate and a concentration of its records with the
phrase plus the prior's weight (a rate estimated from a few records is uncertain). Each task's tail is computed
exactly (sums over ``k = 0..n``; the maximum over labels and over a unit's tasks is bounded by the sum of their
tails, whatever their dependence), rounded up to a grid of ``STEP`` nats and convolved over units:
``-ln P(S >= s)`` is the phrase's surprise in nats, an upper bound of its p-value. Every phrase with records in at
least 2 datasets is a test; the family-wise false-alarm rate per night is held at ``novelty_alpha`` by Bonferroni,
split equally between three groups decided on the text alone (before any label is looked at): phrases the history
has never seen in their tasks, phrases at least ``NEW_RATIO`` times as frequent as there, and the rest; each group's
count of tests is Tarone's. A phrase is a trigger when its surprise reaches ``ln(tests in its group) +
ln(3 / novelty_alpha)`` and it steers at least ``min_tasks`` datasets. A phrase the history has never seen in its
known tasks is also tested in the classification tasks the history cannot speak to, against their own label shares
(:func:`_unknown`): new to the pipeline, it is new there too. Flagged: the records with the phrase and the
steered label in the steered tasks, and, for new or bursting vocabulary, in the other known tasks where it is new and
in the classification tasks the history cannot speak to where it holds more of the task than its rate over the known
tasks allows (:func:`unknown_tasks`; an everyday phrase's natural occurrences outside the steered tasks are not
touched).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeGuard

from tunegate.core.checks.poison._text import binomial_llr, onehot
from tunegate.core.checks.poison.evidence import task_of_rows
from tunegate.core.checks.poison.novelty import TaskHistory, history_rates
from tunegate.core.checks.poison.phrases import Phrase, named_campaigns

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    import numpy as np
    import scipy.sparse as sp

    from tunegate.core.checks.poison.config import TriggerConfig
    from tunegate.core.checks.poison.tasks import Task

#: A phrase this many times as frequent tonight (in its tasks) as in the history is tonight's new vocabulary.
NEW_RATIO = 2.0
#: The groups that share the false-alarm rate equally (Bonferroni within each, Tarone's count of tests).
GROUPS = ("unseen", "burst", "known")
#: Grid of the statistic's distribution (nats); values are rounded up to it, so the tail bound holds.
STEP = 0.05
#: A raised campaign's records are flagged in a task the history cannot speak to when the phrase's count there has a
#: Poisson tail at most this under its rate in the tasks the history knows (:func:`unknown_task_rows`; as the excess
#: pass's ``FLAG_P``).
UNKNOWN_P = 0.05
#: ... and only when the known tasks' rate expects fewer records than this there (a rare phrase; see the function).
UNKNOWN_MAX_EXPECTED = 1.0
#: ... and above that, by a negative binomial whose gamma shape (:func:`known_spread`) is at most this: a phrase's rate
#: varies between kinds of task by at least a third of itself (coefficient of variation ``1 / sqrt(10)``).
MAX_SHAPE = 10.0
#: ... and where at least this share of its records there carry one label (as ``min_label_share``): a campaign's
#: records share the target label; a topical word's many natural records there ("liberals" in OLID) do not.
UNKNOWN_PURITY = 0.9
#: A raised phrase the history holds (a rare word) is flagged in a task where its count bursts at this p-value (the
#: contradiction pass's :func:`~.contradiction_pass._bursting`, the breadth pass; as the excess pass's ``FLAG_P``).
TASK_BURST_P = 0.05


@dataclass
class LabelStatistics:
    """The novelty pass's per (phrase, task) label statistics against the history, pooled per phrase: what the
    novelty pass tests and what the contradiction pass (:mod:`.contradiction_pass`) adds its evidence to."""

    cols: np.ndarray  # per (phrase, classification task) entry (a known task; for new phrases any): its column
    tix: np.ndarray  # ... the task
    fix: np.ndarray  # ... the task's unit of evidence (index: its dataset, or the task itself; tasks.assign_units)
    n: np.ndarray  # ... the phrase's records in the task
    k: np.ndarray  # ... those with the most surprising label
    lab: np.ndarray  # ... that label
    stat: np.ndarray  # ... the truncated statistic (nats)
    rates: list[np.ndarray]  # per task part: expected label rates of each entry
    mass: list[np.ndarray]  # per task part: the predictive's concentration of each entry
    part_of: np.ndarray  # entry -> its task part
    row_in: np.ndarray  # entry -> its row in the part
    total: np.ndarray  # per column: the statistic summed over units of evidence
    achievable: np.ndarray  # per column: the most the statistic could reach
    datasets: np.ndarray  # per column: datasets holding the phrase (known tasks)
    steering: np.ndarray  # per column: datasets it steers
    group: np.ndarray  # per column: 0 never seen in its tasks, 1 at least NEW_RATIO times as frequent, 2 the rest
    burst: np.ndarray  # per column: how surprising tonight's count is against the history's (nats, :func:`burst`)
    order: np.ndarray  # entries sorted by column (stable)
    sorted_cols: np.ndarray  # cols[order]: where each column's entries start and stop in ``order``

    def entries(self, c: int) -> np.ndarray:
        """The entries of phrase column ``c``."""
        import numpy as np

        at = self.sorted_cols
        return self.order[int(np.searchsorted(at, c)):int(np.searchsorted(at, c, side="right"))]

    @property
    def held(self) -> np.ndarray:
        """Per column: whether the phrase is one the history holds that occurs tonight (a finite burst above 0): the
        phrases the burst gate and the breadth pass test."""
        import numpy as np

        return np.asarray(np.isfinite(self.burst) & (self.burst > 0))

    def bursting(self, alpha: float) -> tuple[float, int, np.ndarray]:
        """The burst gate at family-wise ``alpha``: its bar ``ln(m) + ln(1 / alpha)``, the ``m`` phrases the history
        holds that occur tonight (:attr:`held`), and which of those burst past the bar."""
        counted = self.held
        tests = int(counted.sum())
        bar = math.log(max(tests, 1)) + math.log(1.0 / alpha)
        return bar, tests, counted & (self.burst >= bar)

    def prior(self, j: int) -> tuple[np.ndarray, float]:
        """Entry ``j``'s null: the expected label rates and the predictive's concentration."""
        return self.rates[int(self.part_of[j])][int(self.row_in[j])], float(self.mass[int(self.part_of[j])][
            int(self.row_in[j])])

    def surprise(self, c: int, tau: float, cache: dict[tuple[int, tuple[float, ...]], np.ndarray]) -> float:
        """Phrase ``c``'s surprise (nats, :func:`phrase_surprise`); 0 when it steers nothing."""
        if self.total[c] <= 0:
            return 0.0
        return phrase_surprise(self.entries(c), self.fix, self.n, self.prior, total=float(self.total[c]), tau=tau,
                               cache=cache)

    def prime(self, cols: Iterable[int], tau: float, cache: dict[tuple[int, tuple[float, ...]], np.ndarray]) -> None:
        """Compute the task tails that :meth:`surprise` will read for the phrases ``cols``, together
        (:func:`prime_tails`): the same values, at a fraction of the cost of one task at a time. The tasks are met in
        the order :func:`phrase_surprise` meets them (units in order), so a key shared by two tasks keeps the same
        one's tail."""
        prime_tails(((int(self.n[j]), *self.prior(j)) for c in cols if self.total[c] > 0
                     for unit in _units(self.entries(c), self.fix) for j in unit), tau, cache)


@dataclass(frozen=True)
class TaskCounts:
    """Tonight's label counts in one classification task, for the phrases held by >= 2 of its records: what the
    history passes (novelty, contradiction, excess) test, in the tasks the history knows (:func:`known_counts`)."""

    task: int  # the task's index
    cols: np.ndarray  # the phrases' columns
    n: np.ndarray  # the task's records holding each
    counts: np.ndarray  # len(cols) x labels: those records per label


def knows(past: TaskHistory | None, min_records: int) -> TypeGuard[TaskHistory]:
    """Whether the history can speak to a task: it holds at least ``min_records`` of the task's records (fewer give
    no reliable rate; ``None``: the history never saw the task)."""
    return past is not None and past[1].sum() >= min_records


def known_counts(x: sp.csr_matrix, tasks: list[Task], history: list[TaskHistory | None], config: TriggerConfig
                 ) -> list[TaskCounts]:
    """:class:`TaskCounts` of every classification task the history knows, in task order."""

    out = []
    for ti, task in enumerate(tasks):
        past = history[ti]
        if task.kind != "label" or not knows(past, config.min_task_records):
            continue  # a task the history does not know: its base rate is no baseline (natural cues steer it)
        entry = _task_counts(x, ti, task)
        if entry is not None:
            out.append(entry)
    return out


def _task_counts(x: sp.csr_matrix, ti: int, task: Task, within: np.ndarray | None = None) -> TaskCounts | None:
    """:class:`TaskCounts` of task ``ti`` for the phrase columns ``within`` (default: all); ``None`` when no phrase is
    in 2 of its records."""
    import numpy as np

    xt = x[task.rows] if within is None else x[task.rows][:, within]
    n_all = np.asarray(xt.sum(axis=0)).ravel()
    keep = np.flatnonzero(n_all >= 2)
    if not len(keep):
        return None
    counts = np.rint((xt[:, keep].T @ onehot(task.labels.outcome, len(task.labels.names))).toarray())
    return TaskCounts(ti, keep if within is None else within[keep], n_all[keep].astype(np.float64),
                      counts.astype(np.float64))


def label_statistics(x: sp.csr_matrix, tasks: list[Task], history: list[TaskHistory | None], config: TriggerConfig,
                     *, known: list[TaskCounts] | None = None) -> LabelStatistics | None:
    """Per (phrase, classification task the history knows) where >= 2 records hold the phrase: its truncated
    statistic against the history's predictive, and the per-phrase pooling and vocabulary groups (module
    docstring); for a phrase new to the history, also its tasks the history cannot speak to (:func:`_unknown`).
    ``known``: :func:`known_counts` (computed here when not given). ``None`` when no task is known."""
    import numpy as np

    weight = config.history_weight
    unit_index: dict[str, int] = {}
    parts = []
    held_parts = []
    for entry in known if known is not None else known_counts(x, tasks, history, config):
        task, past = tasks[entry.task], history[entry.task]
        assert past is not None
        rates, held = history_rates(past, entry.cols, task.labels.base, weight)
        held_parts.append(held)
        # held + weight: the Beta posterior's concentration (how sure the history is of the rates); seen: the
        # phrase's records a night like the history's would hold
        parts.append(_part(entry, task, rates=rates, mass=held + weight, seen=held / past[1].sum() * len(task.rows),
                           config=config, unit_index=unit_index))
    if not parts:
        return None
    cols, seen, n = (np.concatenate([p[i] for p in parts]) for i in (0, 7, 3))
    # Three pre-declared groups, decided on the text alone (so they may share out the false-alarm rate): phrases the
    # history has never seen in their tasks, phrases at least NEW_RATIO times as frequent tonight as there, the rest
    expected = np.bincount(cols, weights=seen, minlength=x.shape[1])
    tonight = np.bincount(cols, weights=n, minlength=x.shape[1])
    group = np.where((tonight > 0) & (expected == 0), 0, np.where((tonight > 0) & (tonight >= NEW_RATIO * expected),
                                                                    1, 2))
    bursts = burst(tonight, expected, np.bincount(cols, weights=np.concatenate(held_parts), minlength=x.shape[1]))
    for entry in _unknown(x, tasks, history, config, new=np.flatnonzero(group == 0)):
        task = tasks[entry.task]
        rates = np.tile(task.labels.base, (len(entry.cols), 1))
        parts.append(_part(entry, task, rates=rates, mass=np.full(len(entry.cols), weight),
                           seen=np.zeros(len(entry.cols)), config=config, unit_index=unit_index))
    cols, tix, fix, n, k, lab, stat, seen, reach = (np.concatenate([p[i] for p in parts])
                                                    for i in (0, 1, 2, 3, 4, 5, 6, 7, 9))
    total, achievable, datasets, steering = pool_datasets(cols, fix, stat, reach, n_fam=len(unit_index),
                                                          width=x.shape[1], family_of=families_of(tasks, unit_index))
    order = np.argsort(cols, kind="stable")
    return LabelStatistics(cols, tix, fix, n, k, lab, stat, [p[8] for p in parts], [p[10] for p in parts],
                           np.concatenate([np.full(len(p[0]), i) for i, p in enumerate(parts)]),
                           np.concatenate([np.arange(len(p[0])) for p in parts]), total, achievable, datasets,
                           steering, group, bursts, order, cols[order])


def burst(tonight: np.ndarray, expected: np.ndarray, held: np.ndarray) -> np.ndarray:
    """Per phrase: ``-ln P(K >= k)`` for tonight's ``k`` records of it (``tonight``) given the history's ``held``
    records of it, where a night like the history's would hold ``expected``: under the null both counts are Poisson
    with rates in the ratio of their exposures ``r = expected / held``, so ``K`` given the sum is binomial with
    ``r / (1 + r)`` (the conditional test of two Poisson rates; exact, and it weighs how few records the history's
    rate rests on). A phrase the history never held gives ``inf`` (0 when it is absent tonight too)."""
    import numpy as np
    from scipy.special import betainc

    out = np.zeros(len(tonight))
    new = (tonight > 0) & (held <= 0)
    out[new] = np.inf
    live = (tonight > 0) & (held > 0)
    k, h = tonight[live], held[live]
    share = expected[live] / (expected[live] + h)
    out[live] = -np.log(np.maximum(betainc(k, h + 1.0, share), 1e-300))  # P(Bin(k + h, share) >= k)
    return out


def _part(entry: TaskCounts, task: Task, *, rates: np.ndarray, mass: np.ndarray, seen: np.ndarray,
          config: TriggerConfig, unit_index: dict[str, int]) -> tuple[np.ndarray, ...]:
    """One task's entries: column, task, unit of evidence (:attr:`~.tasks.Task.evidence_unit`), records, records on
    the most surprising label, that label, the truncated statistic, the records the history expects, the expected
    rates, what the statistic could reach (every record on the least expected label: Tarone's count of real tests) and
    the predictive's concentration."""
    import numpy as np
    from scipy.stats import betabinom

    cols, n, counts = entry.cols, entry.n, entry.counts
    llr = binomial_llr(counts, n[:, None], rates) * (counts >= 2)
    lab = llr.argmax(axis=1)
    stat = llr[np.arange(len(cols)), lab]
    stat = np.where(stat >= config.novelty_task_nats, stat, 0.0)
    unit = unit_index.setdefault(task.evidence_unit, len(unit_index))
    least = np.where(rates > 1e-9, rates, 1.0).min(axis=1)
    reach = -betabinom.logpmf(n, n, least * mass, (1 - least) * mass)
    return (cols, np.full(len(cols), entry.task), np.full(len(cols), unit), n, counts[np.arange(len(cols)), lab], lab,
            stat, seen, rates, reach, mass)


def _unknown(x: sp.csr_matrix, tasks: list[Task], history: list[TaskHistory | None], config: TriggerConfig, *,
             new: np.ndarray) -> list[TaskCounts]:
    """Tonight's label counts of the phrases ``new`` to the history (never seen in the known tasks where they occur
    tonight) in the classification tasks the history cannot speak to (none, or under ``min_task_records`` records
    there). A phrase new to the pipeline is new there too: its labels are expected to follow the task's own label
    shares tonight, worth the prior's weight, as in a known task that never saw it (a thin campaign's other half,
    in datasets whose records all arrive tonight). They add to the phrase's statistic and to what it could reach
    (Tarone's count), never to its group."""

    out: list[TaskCounts] = []
    if not len(new):
        return out
    for ti, task in enumerate(tasks):
        past = history[ti]
        if task.kind != "label" or knows(past, config.min_task_records):
            continue
        entry = _task_counts(x, ti, task, new)
        if entry is not None:
            out.append(entry)
    return out


def novelty_phrases(x: sp.csr_matrix, vocab: np.ndarray, tasks: list[Task], history: list[TaskHistory | None],
                    config: TriggerConfig, *, found: list[Phrase], stats: LabelStatistics | None = None
                    ) -> tuple[list[Phrase], dict[str, float]]:
    """The phrases whose label skews the history does not explain, strongest first; and the pass's figures
    (``stats``: :func:`label_statistics`, computed here when not given)."""
    import numpy as np

    tau = config.novelty_task_nats
    if stats is None:
        stats = label_statistics(x, tasks, history, config)
    figures: dict[str, float] = {}
    if stats is None:
        return [], figures
    tix, n, k, lab, stat = stats.tix, stats.n, stats.k, stats.lab, stats.stat
    total, group = stats.total, stats.group
    testable = stats.datasets >= 2
    margin = math.log(len(GROUPS) / config.novelty_alpha)
    tests = [_tarone(stats.achievable[testable & (group == g)], margin) for g in range(len(GROUPS))]
    bar = [math.log(m) + margin for m in tests]
    figures = {**{f"tests_{name}": float(m) for name, m in zip(GROUPS, tests, strict=True)},
               **{f"bar_{name}": round(b, 2) for name, b in zip(GROUPS, bar, strict=True)}}
    candidates = np.flatnonzero(testable & (stats.steering >= config.min_tasks) & (total >= min(bar)))
    cache: dict[tuple[int, tuple[float, ...]], np.ndarray] = {}
    stats.prime(candidates.tolist(), tau, cache)
    surprise: dict[int, float] = {}
    for c in candidates.tolist():
        s = stats.surprise(c, tau, cache)
        if s >= bar[int(group[c])]:
            surprise[c] = s
    if not surprise:
        return [], figures
    steered = {c: e[stat[e] > 0] for c, e in ((c, stats.entries(c)) for c in surprise)}
    xc = x.tocsc()
    owner = task_of_rows(tasks, x.shape[0])
    rows_of = {c: _campaign_rows(xc, owner, tasks, history=history, c=c, spread=group[c] < 2,
                                 min_known=config.min_task_records,
                                 steered=dict(zip(tix[steered[c]].tolist(), lab[steered[c]].tolist(), strict=True)))
               for c in surprise}
    detail_of = {c: sorted(zip(tix[pairs].tolist(), [0] * len(pairs), n[pairs].astype(int).tolist(),
                               k[pairs].astype(int).tolist(), lab[pairs].tolist(), strict=True), key=lambda t: -t[2])
                 for c, pairs in steered.items()}
    out: list[Phrase] = []
    joined: list[int] = []
    for head, cl, rows in named_campaigns(surprise, rows_of, xc, vocab, found, detail_of=detail_of, owner=owner,
                                          by="novelty pass", joined=joined):
        detail = detail_of[head]
        occurs = xc.indices[xc.indptr[head]:xc.indptr[head + 1]]
        if owner is not None:
            occurs = occurs[owner[occurs] >= 0]
        covered = 1.0 if len(rows_of[head]) >= len(occurs) else len(rows_of[head]) / len(occurs)
        out.append(Phrase(int(head), str(vocab[head]), surprise[head], covered, rows,
                          detail, [str(vocab[m]) for m in cl if m != head]))
    figures["joined"] = float(len(joined))
    return out, figures


def pool_datasets(cols: np.ndarray, fix: np.ndarray, stat: np.ndarray, reach: np.ndarray, *, n_fam: int,
                  width: int, family_of: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                                          np.ndarray]:
    """Per phrase column (``width`` of them), from its (task) statistics ``stat`` and the most each task could give
    ``reach``, in units of evidence ``fix`` (``n_fam`` of them): the sum over units of each unit's largest statistic,
    the same sum of ``reach``, how many datasets hold the phrase and how many it steers (a statistic above 0 in one of
    their units). ``family_of``: each unit's dataset (:func:`families_of`; ``None``: the units are datasets). Tasks of
    one dataset that label the same texts are one unit (:func:`~.tasks.assign_units`): a unit counts once."""
    import numpy as np

    key = cols.astype(np.int64) * n_fam + fix
    uniq, inv = np.unique(key, return_inverse=True)
    fam_stat, fam_reach = np.zeros(len(uniq)), np.zeros(len(uniq))
    np.maximum.at(fam_stat, inv, stat)
    np.maximum.at(fam_reach, inv, reach)
    phrase_of = uniq // n_fam
    total = np.bincount(phrase_of, weights=fam_stat, minlength=width)
    achievable = np.bincount(phrase_of, weights=fam_reach, minlength=width)
    if family_of is None:
        datasets = np.bincount(phrase_of, minlength=width)
        steering = np.bincount(phrase_of, weights=(fam_stat > 0).astype(np.float64), minlength=width)
        return total, achievable, datasets, steering
    n_families = int(family_of.max(initial=0)) + 1
    in_family = phrase_of * n_families + family_of[uniq % n_fam]
    datasets = np.bincount(np.unique(in_family) // n_families, minlength=width)
    steering = np.bincount(np.unique(in_family[fam_stat > 0]) // n_families, minlength=width).astype(np.float64)
    return total, achievable, datasets, steering


def families_of(tasks: list[Task], unit_index: dict[str, int]) -> np.ndarray:
    """Per unit of evidence of ``unit_index`` (name -> index): the index of its dataset (in order of first sight)."""
    import numpy as np

    out = np.zeros(len(unit_index), dtype=np.int64)
    family_index: dict[str, int] = {}
    for task in tasks:
        at = unit_index.get(task.evidence_unit)
        if at is not None:
            out[at] = family_index.setdefault(task.family, len(family_index))
    return out


def phrase_surprise(pairs: np.ndarray, fix: np.ndarray, n: np.ndarray, prior: Callable[[int], tuple[np.ndarray, float]],
                    *, total: float, tau: float, cache: dict[tuple[int, tuple[float, ...]], np.ndarray]) -> float:
    """A phrase's surprise (nats, the upper bound of its p-value, module docstring) from its (task) entries ``pairs``:
    each task's exact tail under its beta-binomial ``prior(j)`` (expected rates, concentration), a unit's tasks
    (``fix``: units of evidence) bounded by the sum of their tails, units convolved, up to the phrase's statistic
    ``total``."""
    import numpy as np

    top = math.ceil(total / STEP - 1e-9)
    tails = []
    for unit in _units(pairs, fix):
        tail = np.zeros(top + 1)
        for j in unit:
            rates, mass = prior(j)
            tail += _fit(_tail(int(n[j]), rates, mass, tau, cache), top + 1)
        tails.append(np.minimum.accumulate(np.minimum(1.0, _fit(tail, top + 1))))
    return _sum_surprise(tails, top)


def _units(pairs: np.ndarray, fix: np.ndarray) -> list[list[int]]:
    """A phrase's entries ``pairs`` per unit of evidence (``fix``), units in increasing order, each unit's entries in
    their order: the order :func:`phrase_surprise` reads them in (and :meth:`LabelStatistics.prime` primes them in)."""
    import numpy as np

    units = fix[pairs]
    return [pairs[units == f].tolist() for f in np.unique(units).tolist()]


def _tarone(achievable: np.ndarray, margin: float) -> int:
    """Tarone's count of tests for discrete statistics: the smallest ``m`` such that at most ``m`` phrases could
    reach the bar ``ln m + margin`` at all (a phrase with 2 records in each of 2 datasets can never be
    significant, so it costs no share of the false-alarm rate)."""
    import numpy as np

    reach = np.sort(achievable)[::-1]
    m = 1
    while m < len(reach) and int(np.searchsorted(-reach, -(math.log(m) + margin), side="right")) > m:
        m += 1
    return m


def _campaign_rows(xc: sp.csc_matrix, owner: np.ndarray | None, tasks: list[Task], *,
                   history: list[TaskHistory | None], c: int, steered: dict[int, int], spread: bool,
                   min_known: int) -> np.ndarray:
    """The records a campaign of phrase ``c`` put there: in the steered tasks, those with the phrase and the steered
    label; in the other classification tasks the history knows, where the phrase is new (at least ``NEW_RATIO``
    times as frequent as in the history), those with the phrase and the label most of them carry (the campaign's
    records in tasks where a few of them could not show a skew, such as 3 records on a majority label), when
    ``spread`` (the phrase is new vocabulary); in the classification tasks the history cannot speak to, those
    :func:`unknown_task_rows` picks. Natural occurrences where the history already has the phrase are left alone, and
    so are an everyday phrase's records outside the tasks it steers."""
    import numpy as np

    rows = xc.indices[xc.indptr[c]:xc.indptr[c + 1]]
    if owner is None:
        where = {ti: np.intersect1d(t.rows, rows) for ti, t in enumerate(tasks) if t.kind == "label"}
    else:
        where = {int(ti): rows[owner[rows] == ti] for ti in np.unique(owner[rows]).tolist()
                 if ti >= 0 and tasks[ti].kind == "label"}
    out = []
    for ti, mine in where.items():
        task = tasks[ti]
        local = np.searchsorted(task.rows, mine) if owner is not None else np.flatnonzero(np.isin(task.rows, mine))
        labels = task.labels.outcome[local]
        if ti in steered:
            out.append(mine[labels == steered[ti]])
            continue
        past = history[ti]
        if not spread or past is None or not knows(past, min_known):
            continue
        _, held = history_rates(past, np.array([c]), task.labels.base, 1.0)
        if len(mine) >= NEW_RATIO * float(held[0]) / past[1].sum() * len(task.rows):
            top = np.bincount(labels).argmax()
            if 2 * int((labels == top).sum()) > len(mine):
                out.append(mine[labels == top])
    if spread:
        out += [flagged for _, _, flagged in unknown_tasks(rows, tasks, history, c, min_known=min_known)]
    return np.unique(np.concatenate(out)) if out else np.array([], dtype=np.int64)


def known_rate(history: list[TaskHistory | None], c: int, min_known: int) -> float:
    """Phrase ``c``'s share of the history's records over the classification tasks it knows (``min_known`` records
    or more), smoothed by half a record: what a task the history has not seen would hold of it by chance."""
    held, seen = _known_counts(history, c, min_known)
    return (sum(held) + 0.5) / (sum(seen) + 1.0)


def expected_records(task: Task, past: TaskHistory | None, c: int, label: int, *, rate: float, min_known: int) -> float:
    """Tonight's records of phrase ``c`` on ``label`` in ``task`` that the history's rate expects
    (:func:`~.breadth_pass.task_burst`'s null): the history's count there scaled to tonight's exposure, or in a task
    the history cannot speak to the phrase's ``rate`` over the known tasks times the task's records."""
    size = float(len(task.rows))
    if not knows(past, min_known):
        return rate * size
    return float(past[0][c, label]) * size / float(past[1].sum())


def _known_counts(history: list[TaskHistory | None], c: int, min_known: int) -> tuple[list[float], list[float]]:
    """Per classification task the history knows (``min_known`` records or more): its records of phrase ``c``, and its
    records."""
    held, seen = [], []
    for past in history:
        if knows(past, min_known):
            held.append(float(past[0][c].sum()))
            seen.append(float(past[1].sum()))
    return held, seen


def known_spread(history: list[TaskHistory | None], c: int, min_known: int) -> float:
    """How much phrase ``c``'s rate varies between the classification tasks the history knows: the shape ``a`` of a
    gamma distribution of per-task rates (a task's count is then negative binomial: variance ``m + m^2 / a`` for
    ``m`` expected), by the method of moments over those tasks, at most ``MAX_SHAPE`` (no two kinds of task share a
    phrase's rate more closely than that; a few tasks say little); ``MAX_SHAPE`` when the counts vary no more than
    Poisson's."""
    import numpy as np

    held, seen = _known_counts(history, c, min_known)
    if len(held) < 2:
        return MAX_SHAPE
    h, e = np.asarray(held), np.asarray(seen)
    rate = h.sum() / e.sum()
    excess = float(((h - e * rate) ** 2 - e * rate).sum())
    if excess <= 0 or rate <= 0:
        return MAX_SHAPE
    return min(MAX_SHAPE, float(rate ** 2 * (e ** 2).sum() / excess))


def unknown_tasks(holding: np.ndarray, tasks: list[Task], history: list[TaskHistory | None], c: int, *,
                  min_known: int) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """For a raised phrase ``c`` held by records ``holding``: per classification task the history cannot speak to
    (``None``, or fewer than ``min_known`` records there) that holds it, (the task, its records with the phrase, those
    flagged), for the tasks where it flags any.

    A phrase the known tasks make rare there is judged task by task (:func:`unknown_task_rows`). An everyday or
    clustered phrase (``UNKNOWN_MAX_EXPECTED`` records or more expected at its known rate) is judged over its tasks
    together. Each task's p-value is its count's tail (:func:`unknown_count_tail`) or, the smaller, Fisher's
    combination of that tail with its records' purity (:func:`purity_tail`: how rarely that many of them share one
    label, for a phrase that keeps to base rates as closely as it does in the tasks the history knows). A task is
    flagged at ``UNKNOWN_P`` over its tasks holding 2 or more (Bonferroni, what :func:`unknown_task_rows` flags) and
    further where the adaptive step-up over them reaches (``evidence.flag_level``, as a raised campaign's weaker tasks
    in the other passes). A slang word that fills some tweet datasets and not others ("ur": a spread whose gamma shape
    is 0.3) makes 5 records in a 400-record task a 1-in-10 count (dev, seed 10), but 5 of 5 on one label where its
    records split in the known tasks is not chance: a dirty- or clean-label campaign's records share the target
    label."""
    import numpy as np

    from tunegate.core.checks.poison.evidence import flag_level

    rate = known_rate(history, c, min_known)
    held = {}
    for ti, task in enumerate(tasks):
        if task.kind == "label" and not knows(history[ti], min_known):
            local = np.flatnonzero(np.isin(task.rows, holding))
            if len(local):
                held[ti] = local
    if not held:
        return []
    shape = known_spread(history, c, min_known)
    tests = max(1, sum(len(local) >= 2 for local in held.values()))
    out = []
    pooled: list[tuple[int, np.ndarray, np.ndarray, float]] = []  # judged together: task, records, flagged if, p
    alpha: float | None = None
    read = False
    for ti, local in held.items():
        task = tasks[ti]
        mine, labels = task.rows[local], task.labels.outcome[local]
        expected = rate * len(task.rows)
        if expected < UNKNOWN_MAX_EXPECTED:
            flagged = unknown_task_rows(mine, labels, len(task.rows), rate=rate, shape=shape, tests=tests)
            if len(flagged):
                out.append((ti, mine, flagged))
            continue
        if len(local) < 2:
            continue
        top = int(np.bincount(labels).argmax())
        on = int((labels == top).sum())
        p = unknown_count_tail(len(local), on, expected, shape=shape)
        if p < 1.0:
            if not read:
                alpha, read = known_concentration(history, c, min_known), True
            s = -math.log(max(p, 1e-300)) - math.log(max(purity_tail(len(local), on, alpha, task.labels.base), 1e-300))
            p = min(p, math.exp(-s) * (1.0 + s))
        pooled.append((ti, mine, mine[labels == top], p))
    if pooled:
        level = flag_level([p for *_, p in pooled], floor=UNKNOWN_P / tests)
        out += [(ti, mine, flagged) for ti, mine, flagged, p in pooled if p < 1.0 and p <= level]
    return out


#: :func:`known_concentration` searches this grid (log-spaced): from a phrase whose records in a task nearly all share
#: one label (a cue) to one whose records fall on the labels at the task's base rates.
CONCENTRATIONS = (0.05, 1e4, 81)


def known_concentration(history: list[TaskHistory | None], c: int, min_known: int) -> float | None:
    """How closely phrase ``c``'s records keep to their tasks' base rates, in the classification tasks the history
    knows (``min_known`` records or more) where it holds 2 or more of them: the concentration ``alpha`` of a
    Dirichlet-multinomial whose mean is each task's base rates, fitted to the phrase's label counts there by maximum
    likelihood over ``CONCENTRATIONS``. Small: its records share one label wherever they are (a cue, a topic's word);
    large: its labels are the task's. ``None`` without such a task."""
    import numpy as np
    from scipy.special import gammaln

    counts, bases = [], []
    for past in history:
        if not knows(past, min_known):
            continue
        h = past[0][c].toarray().ravel()
        if h.sum() >= 2:
            live = past[1] > 0
            counts.append(h[live])
            bases.append(past[1][live] / past[1].sum())
    if not counts:
        return None
    low, high, steps = CONCENTRATIONS
    alphas = np.geomspace(low, high, int(steps))
    loglik = np.zeros(len(alphas))
    for h, b in zip(counts, bases, strict=True):
        ab = alphas[:, None] * b[None, :]
        loglik += (gammaln(alphas) - gammaln(h.sum() + alphas)
                   + (gammaln(h[None, :] + ab) - gammaln(ab)).sum(axis=1))
    return float(alphas[int(np.argmax(loglik))])


def purity_tail(k: int, on: int, alpha: float | None, base: np.ndarray) -> float:
    """How often ``on`` or more of a phrase's ``k`` records in a task share one label (a strict majority) by chance,
    where the phrase keeps to a task's base rates ``base`` as closely as in the tasks the history knows (``alpha``:
    :func:`known_concentration`): each label's count is beta-binomial, and since a strict majority is held by one label
    at most, their tails add up exactly. A phrase whose records share a label wherever the history saw them (a
    sentiment cue) makes a pure task no surprise; a label most of the task's records carry anyway makes it none either.
    1 without a known task to read (``alpha`` ``None``)."""
    import numpy as np
    from scipy.stats import betabinom

    if alpha is None or 2 * on <= k:
        return 1.0
    b = np.asarray(base, dtype=np.float64)
    b = b[b > 0]
    return min(1.0, float(betabinom.sf(on - 1, k, alpha * b, alpha * (1.0 - b)).sum()))


def unknown_task_rows(mine: np.ndarray, labels: np.ndarray, size: int, *, rate: float, shape: float = math.inf,
                      tests: int = 1, p: float = UNKNOWN_P) -> np.ndarray:
    """A raised campaign's records in one classification task the history cannot speak to (never seen, or too few
    records there: a dataset added tonight, or one whose records all arrived tonight), where its steered tasks' test
    cannot run. ``mine``: the task's records with the phrase, ``labels`` their labels, ``size`` the task's records.

    The count's tail is :func:`unknown_count_tail`'s (rate ``rate``, spread ``shape``). An everyday phrase sits in
    many such tasks: above ``UNKNOWN_MAX_EXPECTED`` records expected the tail is multiplied by its ``tests`` tasks
    there (Bonferroni: nothing else speaks for one of them). Flagged when it is at most ``p``: the records on the label
    a strict majority of them carry. A campaign spread thin puts 3-5 records in each of a dozen tasks, new ones among
    them; one of an everyday phrase puts 10 in a task where it is otherwise rare. (:func:`unknown_tasks` judges an
    everyday phrase's tasks together, and flags at least what this flags.)"""
    import numpy as np

    none = np.array([], dtype=np.int64)
    k = len(mine)
    if not k:
        return none
    top = np.bincount(labels).argmax()
    on = int((labels == top).sum())
    expected = rate * size
    tail = unknown_count_tail(k, on, expected, shape=shape)
    if expected >= UNKNOWN_MAX_EXPECTED:
        tail *= tests
    return np.asarray(mine[labels == top]) if tail <= p else none


def unknown_count_tail(k: int, on: int, expected: float, *, shape: float = math.inf) -> float:
    """How rarely chance puts ``k`` records of a phrase in a classification task the history cannot speak to, ``on``
    of them on one label, where its rate in the tasks the history knows expects ``expected``: 1 where those records
    do not look like a campaign's.

    A phrase the known tasks make rare there (fewer than ``UNKNOWN_MAX_EXPECTED`` records expected: a rare trigger) is
    judged by the Poisson tail of its count, where a strict majority of them share the label. An everyday phrase's rate
    varies between tasks (on dev, "the next" holds 6 natural yelp reviews where the pooled rate expects 2): it is judged
    by the negative binomial tail with the known tasks' spread ``shape`` (:func:`known_spread`, at most
    ``MAX_SHAPE``), and only where the records on the label would be at least twice the records expected (mostly the
    campaign's) and at least ``UNKNOWN_PURITY`` of its records there."""
    from scipy.special import betainc, gammainc

    if not k or 2 * on <= k:
        return 1.0
    if expected < UNKNOWN_MAX_EXPECTED:
        return float(gammainc(k, expected))  # P(Poisson(expected) >= k)
    if on < 2 * expected or on < UNKNOWN_PURITY * k:
        return 1.0
    shape = min(shape, MAX_SHAPE)
    return float(betainc(k, shape, expected / (expected + shape)))  # P(NB(shape, mean expected) >= k)


def _tail(n: int, rates: np.ndarray, mass: float, tau: float,
          cache: dict[tuple[int, tuple[float, ...]], np.ndarray]) -> np.ndarray:
    """``T[j]``: an upper bound of ``P(X > (j - 1) * STEP)`` for a task's truncated statistic ``X`` over ``n`` records
    (``T[0] = 1``). Under the null, each label's count follows the history's posterior predictive, a beta-binomial
    with mean ``rates`` and concentration ``mass`` (the history's records with the phrase plus the prior's weight:
    a rate estimated from a few records is uncertain, and tonight's skew is judged against that uncertainty). The
    sum over labels of the exact tails bounds the maximum's; values are rounded up to the grid, which keeps the
    bound. Kept in ``cache`` under :func:`_tail_key` (tasks whose nulls agree to the rounding share the first one's);
    computed by :func:`prime_tails`, which the passes call for all their tasks at once beforehand."""
    key = _tail_key(n, rates, mass)
    if key not in cache:
        prime_tails([(n, rates, mass)], tau, cache)
    return cache[key]


#: :func:`prime_tails` computes at most this many (entry, count) cells at once (memory: ~20 bytes a cell per label, ~30
#: MB for five labels).
PRIME_CELLS = 1 << 18


def _tail_key(n: int, rates: np.ndarray, mass: float) -> tuple[int, tuple[float, ...]]:
    """The key of a task's tail in the cache of :func:`_tail`: tasks whose nulls agree to the rounding share one."""
    import numpy as np

    return n, (round(mass, 2), *np.round(rates, 4).tolist())


def prime_tails(entries: Iterable[tuple[int, np.ndarray, float]], tau: float,
                cache: dict[tuple[int, tuple[float, ...]], np.ndarray]) -> None:
    """Put in ``cache`` the tail of :func:`_tail` for each ``(n, rates, mass)`` of ``entries`` not there yet (the first
    of those that share a key), computed together for the entries of one size and number of labels: per label, the
    statistic of every count, its grid cell and its beta-binomial mass, summed per cell; the labels' sums added in
    label order; the tail the reversed cumulative sum, 1 at 0. The values do not depend on what is computed together
    (tested); the novelty pass meets ~30,000 such tasks on a 40k night, whose one-at-a-time numpy calls cost
    seconds."""
    import numpy as np

    from tunegate.core.checks.poison._text import betabinom_logpmf

    pending: dict[tuple[int, tuple[float, ...]], tuple[np.ndarray, float]] = {}
    for n, rates, mass in entries:
        key = _tail_key(n, rates, mass)
        if key not in cache and key not in pending:
            pending[key] = (rates, mass)
    groups: dict[tuple[int, int], list[tuple[int, tuple[float, ...]]]] = {}
    for key, (rates, _) in pending.items():
        groups.setdefault((key[0], len(rates)), []).append(key)
    for (n, size), keys in groups.items():
        ks = np.arange(n + 1, dtype=np.float64)
        block = max(1, PRIME_CELLS // (n + 1))
        for start in range(0, len(keys), block):
            part = keys[start:start + block]
            expected = np.array([pending[key][0] for key in part], dtype=np.float64).reshape(len(part), size)
            concentration = np.array([pending[key][1] for key in part], dtype=np.float64)[:, None]
            k = np.ascontiguousarray(np.broadcast_to(ks, (len(part), n + 1)))
            trials = np.full(k.shape, float(n))
            per_label = []
            for lab in range(size):
                q = np.ascontiguousarray(np.broadcast_to(expected[:, lab:lab + 1], k.shape))
                y = binomial_llr(k, trials, q) * (k >= 2)
                sel = (y >= tau) & (q > 1e-9)
                bins = np.zeros(k.shape, dtype=np.int64)
                bins[sel] = np.ceil(y[sel] / STEP - 1e-9).astype(np.int64)
                weight = np.zeros(k.shape)
                weight[sel] = np.exp(betabinom_logpmf(k[sel], n, (q * concentration)[sel],
                                                      np.maximum(1e-9, (1 - q) * concentration)[sel]))
                per_label.append((sel, bins, weight))
            for e, key in enumerate(part):
                mass_at: np.ndarray = np.zeros(1)
                for sel, bins, weight in per_label:
                    on = sel[e]
                    if not on.any():
                        continue
                    here = np.bincount(bins[e][on], weights=weight[e][on])
                    mass_at = (_fit(mass_at, len(here)) + here if len(here) > len(mass_at)
                               else mass_at + _fit(here, len(mass_at)))
                tail = np.cumsum(mass_at[::-1])[::-1]
                tail[0] = 1.0
                cache[key] = tail


def _fit(a: np.ndarray, size: int) -> np.ndarray:
    """``a`` cut or zero-padded to ``size``; a cut keeps the mass above in the last cell (tails: just the value)."""
    import numpy as np

    return a[:size] if len(a) >= size else np.concatenate([a, np.zeros(size - len(a))])


def _sum_surprise(tails: list[np.ndarray], top: int) -> float:
    """``-ln P(Z_1 + ... + Z_m >= top)`` for independent grid variables with tails ``T`` (``P(Z >= j) = T[j]``), each
    cut at ``top`` (mass above it lumped there): the exact tail of the dominating sum."""
    import numpy as np

    dist = np.zeros(top + 1)
    dist[0] = 1.0
    for tail in tails:
        pmf = tail - np.append(tail[1:], 0.0)
        pmf[-1] = tail[-1]
        conv = np.convolve(dist, pmf)
        dist = conv[:top + 1].copy()
        dist[top] += conv[top + 1:].sum()
    return float(-math.log(max(dist[top], 1e-300)))


