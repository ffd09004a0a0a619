"""Where tonight's records hold a phrase out of place: the insertion test's verdicts (:mod:`.insertion`), kept for
the passes that read them, and a model of how often a phrase's natural occurrences look inserted.

The insertion pass (:mod:`.insertion_pass`) reads the *labels* of a phrase's out-of-place occurrences. The excess pass
(:mod:`.excess_pass`) reads *counts* against the history. A campaign of an everyday phrase adds records that are both
too many and, half of them, out of place, while the phrase's natural records look inserted less often, how often
depending on the phrase and the task (dev seed 26: "the following" in 13 of its 576 classification records, "of
course", often a sentence of its own, in 44 of 122). So where
the excess pass finds a task with more records of a label than the history allows, the share of them that hold the
phrase out of place is a second, independent piece of evidence (:meth:`Placement.tail`).

**The rate of a natural occurrence.** A candidate phrase's records in classification tasks each hold it out of place
with probability ``rate(phrase) * factor(task)``: the phrase's share of out-of-place records over all its tasks
(``O_c / N_c``, shrunk to the batch's share over every candidate with ``PHRASE_WEIGHT`` records), times how much more
often candidates look inserted in that task than in the batch (``TASK_WEIGHT`` records of shrinkage; quiz questions,
ungrammatical sentences). Both are read over the whole batch, the campaign included: its records raise the phrase's
rate, which makes the test conservative (dev seed 26, "of these": 32 of its 227 classification records out of place,
a rate of 12% once shrunk; its natural records alone: 9 of 177, 5%). Out-of-place contexts count once per task
(:func:`~.insertion_pass._inserted_matrix` with ``distinct``), records are counted whole: the tail is taken for the
records of one label in a task that hold the phrase, ``k`` of them, ``o`` holding it out of place,
``P(Binomial(k, rate) >= o)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from tunegate.core.checks.poison.evidence import label_mask

if TYPE_CHECKING:
    import numpy as np
    import scipy.sparse as sp

    from tunegate.core.checks.poison.insertion import Occurrences
    from tunegate.core.checks.poison.tasks import Task

#: Records of shrinkage of a phrase's out-of-place rate toward the batch's rate over every candidate.
PHRASE_WEIGHT = 50.0
#: Records of shrinkage of a task's out-of-place rate (over every candidate) toward the batch's.
TASK_WEIGHT = 20.0
#: The rate of a natural occurrence is kept in [RATE_FLOOR, RATE_CEILING].
RATE_FLOOR, RATE_CEILING = 1e-3, 0.9


@dataclass
class Placement:
    """The insertion test's verdicts over tonight's classification records, and the rate model of module docstring.

    ``occ``: the scored out-of-place occurrences; ``inserted``: record x phrase, 1 where the record holds the phrase out
    of place; ``distinct``: the same, a context of the phrase counted once per task; ``placed``: record x phrase, 1
    where the record holds it in place only (read by the insertion pass, then released: ``None``); ``candidate``: per
    phrase column, whether it was scored; ``phrase_rate``: per column (0 outside the candidates); ``task_factor``:
    per task (1 for tasks without candidates); ``owner``: each record's task (-1 outside them)."""

    occ: Occurrences
    inserted: sp.csr_matrix
    distinct: sp.csr_matrix
    placed: sp.csr_matrix | None
    candidate: np.ndarray
    phrase_rate: np.ndarray
    task_factor: np.ndarray
    owner: np.ndarray

    def tail(self, task_index: int, task: Task, cols: np.ndarray, *, labels: np.ndarray, records: np.ndarray,
             where: np.ndarray) -> np.ndarray:
        """Per phrase column of ``cols`` in the classification task ``task`` (read where ``where``, 1 elsewhere):
        ``P(Binomial(k, rate) >= o)`` for ``k`` (``records``) the task's records that hold the phrase and carry
        ``labels`` (per column), ``o`` of them holding it out of place (distinct contexts); 1 for a phrase that is not
        a candidate or has no such record. A p-value of the placement of those records given their number, under the
        null that they are natural."""
        import numpy as np
        from scipy.stats import binom

        from tunegate.core.checks.poison._text import onehot

        out = np.ones(len(cols))
        live = np.flatnonzero(where & self.candidate[cols] & (records >= 1))
        if not len(live):
            return out
        ch = task.labels
        counts = (self.distinct[task.rows][:, cols[live]].T @ onehot(ch.outcome, len(ch.names))).toarray()
        k = np.asarray(records, dtype=np.float64)[live]
        o = np.minimum(counts[np.arange(len(live)), labels[live]], k)
        rate = np.clip(self.phrase_rate[cols[live]] * self.task_factor[task_index], RATE_FLOOR, RATE_CEILING)
        out[live] = np.where(o >= 1, binom.sf(o - 1, k, rate), 1.0)
        return out

    def least(self, task_index: int, cols: np.ndarray, records: np.ndarray) -> np.ndarray:
        """The smallest :meth:`tail` ``records`` records could give (all of them out of place); 1 outside the
        candidates. What Tarone's count reads."""
        import numpy as np

        rate = np.clip(self.phrase_rate[cols] * self.task_factor[task_index], RATE_FLOOR, RATE_CEILING)
        k = np.asarray(records, dtype=np.float64)
        return np.asarray(np.where(self.candidate[cols] & (k >= 1), rate ** np.maximum(k, 1.0), 1.0))


def placement_model(occ: Occurrences, x: sp.csr_matrix, *, inserted: sp.csr_matrix, distinct: sp.csr_matrix,
                    placed: sp.csr_matrix, candidates: np.ndarray, tasks: list[Task], label: list[int],
                    owner: np.ndarray) -> Placement:
    """The :class:`Placement` of tonight's scored occurrences: ``candidates`` the scored phrase columns, ``label`` the
    classification tasks' indices, ``x`` the record x phrase matrix."""
    import numpy as np

    width = x.shape[1]
    is_cand = np.zeros(width, dtype=bool)
    is_cand[candidates] = True
    in_label = label_mask(tasks)[owner].astype(np.float32)
    held = np.rint(np.asarray(x.T @ in_label, dtype=np.float64)).ravel()  # records per phrase in classification tasks
    odd = np.rint(np.asarray(distinct.T @ in_label, dtype=np.float64)).ravel()
    held[~is_cand], odd[~is_cand] = 0.0, 0.0
    base = float(odd.sum() / held.sum()) if held.sum() else 0.0
    phrase_rate = np.where(is_cand, (odd + PHRASE_WEIGHT * base) / (held + PHRASE_WEIGHT), 0.0)
    factor = np.ones(len(tasks))
    if base > 0:
        weights = is_cand.astype(np.float32)
        for ti in label:
            r = tasks[ti].rows
            n_t = float((x[r] @ weights).sum())
            o_t = float(distinct[r].sum())
            factor[ti] = (o_t + TASK_WEIGHT * base) / (n_t + TASK_WEIGHT) / base
    return Placement(occ, inserted, distinct, placed, is_cand, phrase_rate, factor, owner)


def gated(p: np.ndarray, q: np.ndarray, gate: float) -> np.ndarray:
    """One p-value from a count's ``p`` and the placement's ``q`` (independent under the null), read only where the
    count is at most ``gate``: ``p`` above it, ``x (1 + ln(gate / x))`` for ``x = p q`` below it. Exact for uniform
    ``p`` and ``q``: ``P(P <= gate, P Q <= x) = x + x ln(gate / x)``; continuous at ``gate``."""
    import numpy as np

    x = np.maximum(p * q, 1e-300)
    below = np.minimum(1.0, x * (1.0 + np.log(gate / np.minimum(x, gate))))
    return np.asarray(np.where(p <= gate, below, p))


#: Once a campaign is raised: a classification task where at least 2 of its phrase's out-of-place records, and this
#: share of them, carry one label joins it (:func:`placed_tasks`; the insertion pass's ``_campaign_tasks`` too).
CAMPAIGN_SHARE = 0.8
#: The share of the batch's records that a raised campaign's natural records, flagged with it where its tasks are
#: found by placement, may reach (estimated: :func:`natural_on_label`) before those tasks are cut back to their
#: out-of-place records (:func:`cut_back`; the insertion pass and the excess pass).
CLEAN_SHARE = 0.001


def natural_on_label(labels: np.ndarray, label: int, base: float) -> float:
    """How many of a task's records that hold a phrase and carry ``label`` are estimated natural, from those that carry
    another label (``labels``: the outcome codes of the task's records with the phrase): natural occurrences spread
    over the labels at the task's base rates, ``other * p / (1 - p)`` for ``p`` the label's base rate (at most 0.95)."""
    p = min(float(base), 0.95)
    return float((labels != label).sum()) * p / (1.0 - p)


def cut_to_cap(natural: dict[int, float], cap: float) -> set[int]:
    """The tasks to cut back to their out-of-place records: while the estimated natural records of ``natural`` (task
    -> estimate) that are not cut sum above ``cap``, the task with the largest estimate (ties: in the order given)."""
    cut: set[int] = set()
    left = sum(natural.values())
    for ti in sorted(natural, key=lambda t: -natural[t]):
        if left <= cap:
            break
        cut.add(ti)
        left -= natural[ti]
    return cut


#: A campaign task is flagged with all the phrase's records on the campaign's label only where the campaign's records
#: are expected to be most of them: where the estimated natural records there exceed this share of what would be
#: flagged, the task keeps only its out-of-place records (:func:`cut_back`). The same rule as the excess pass's
#: ``expected <= counts / 2`` for the tasks it flags above its floor (:func:`~.evidence.flagged_tasks`).
NATURAL_MAJORITY = 0.5


def mostly_natural(natural: float, flagged: int) -> bool:
    """Whether a task's ``flagged`` records (the phrase's records on the campaign's label there) would be mostly
    natural: the estimate ``natural`` above ``NATURAL_MAJORITY`` of them."""
    return flagged > 0 and natural > NATURAL_MAJORITY * flagged


def cut_back(natural: dict[int, float], flagged: dict[int, int], cap: float) -> set[int]:
    """The tasks to cut back to their out-of-place records: those whose flagged records would be mostly natural
    (:func:`mostly_natural`; ``flagged``: task -> records on the label), then, among the others, while their natural
    estimates sum above ``cap``, the one with the largest (:func:`cut_to_cap`)."""
    mostly = {t for t, n in natural.items() if mostly_natural(n, flagged[t])}
    return mostly | cut_to_cap({t: n for t, n in natural.items() if t not in mostly}, cap)


def shared_label(labels: np.ndarray, size: int) -> int | None:
    """The label that at least 2 of ``labels`` (a campaign's out-of-place records in one task, as outcome codes of
    ``size``), and ``CAMPAIGN_SHARE`` of them, carry; ``None`` when there is none."""
    import numpy as np

    if len(labels) < 2:
        return None
    counts = np.bincount(labels, minlength=size)
    top = int(counts.argmax())
    return top if counts[top] >= 2 and counts[top] >= CAMPAIGN_SHARE * len(labels) else None


def placed_tasks(inserted: sp.csc_matrix, c: int, tasks: list[Task], *, skip: set[int]
                 ) -> list[tuple[int, int, np.ndarray]]:
    """For a raised campaign of phrase ``c`` (``inserted``: record x phrase, out of place, column-compressed): per
    classification task outside ``skip`` where its out-of-place records share a label (:func:`shared_label`), (the
    task, that label, those records). A task where the phrase is common (its count tonight within what the history
    allows) still shows the campaign's planted records by where they hold it. What is flagged there is the caller's:
    the excess pass takes the phrase's records on that label within a cap of estimated natural ones (``_placed``)."""
    import numpy as np

    odd = np.sort(inserted.indices[inserted.indptr[c]:inserted.indptr[c + 1]])
    out = []
    for ti, task in enumerate(tasks):
        if task.kind != "label" or ti in skip:
            continue
        local = np.flatnonzero(np.isin(task.rows, odd, assume_unique=True))
        labels = task.labels.outcome[local]
        top = shared_label(labels, len(task.labels.names))
        if top is not None:
            out.append((ti, top, task.rows[local[labels == top]]))
    return out
