"""Does a record's text support its label? Out-of-fold ranks from a naive Bayes model per classification task.

A dirty-label poison gives records the label their text contradicts (a toxic comment labelled ``Non-toxic``). A
classifier that never saw the record, and that cannot read the trigger, ranks such a record among the least likely
of its label. Per classification task, a multinomial naive Bayes model over the task's word 1-2-grams is trained
``FOLDS`` times, each time without one fold of the task's records (fixed seed), and scores the held-out fold: the
log-odds of each record's own label against the strongest other label. The record's *rank* ``u`` is the share of the
task's records *with the same label* scoring at or below it: under the null (the record is like the task's other
records of its label) ``u`` is uniform on (0, 1], or larger (ties count against the test), whatever the model's
accuracy or calibration; a task whose labels the model cannot read gives uninformative ranks, not false evidence.

The model reads only the n-grams held by at least ``MIN_FEATURE_RECORDS`` records of the task: a rare phrase (a
trigger planted in a few records, a natural word of a few texts) never explains a label, so nothing needs masking and
every record is scored by the same model. Cost: one sparse product per task and fold (0.2 s for the ~60 classification
tasks of a 35k-record batch).

**With a history** (:mod:`.phrase_history`), the earlier nights' counts of the task's phrases per label are what a
naive Bayes model is trained on, so they join every fold's training counts (and the label totals its prior): a task
that brings a few records tonight is read by a model trained on all its earlier records, and one that brings many by a
model with more of its words well estimated. The ranks are still taken among tonight's records of the label, so the
null holds as before: the earlier nights are records the scored ones are not (a record seen on an earlier night with
its label only pushes its rank up). A word is a feature when the task's records tonight and in the history together
hold it ``MIN_FEATURE_RECORDS`` times; a trigger new tonight still never is.

**A task whose label is a verdict on a stated label** ("... Polarity: Negative" -> ``True`` when the review is
negative) is one that model cannot read: its words predict the label only together with the stated word. Where a
word held by 20-80% of the task's records splits it into parts that predict the labels better out of fold (one model
per part, or one model of the label flipped in the part with the word: :func:`_stated`), the task is read that way
and the ranks are taken within a label and a part (the null is unchanged: the records of one label and part are
exchangeable as before). Those models are trained on tonight's records only.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import scipy.sparse as sp

    from tunegate.core.checks.poison.novelty import TaskHistory
    from tunegate.core.checks.poison.tasks import Task

log = logging.getLogger(__name__)

#: Folds of the out-of-fold scores.
FOLDS = 4
#: An n-gram is a feature of a task's model when at least this many of the task's records hold it.
MIN_FEATURE_RECORDS = 10
#: Add-one (Laplace) smoothing of the feature counts.
SMOOTH = 1.0
#: A task is read per stated word (:func:`_stated`) when the per-part models label this share more of its records
#: right out of fold than one model, and McNemar's test of the two says so at this level.
STRATA_GAIN = 0.03
STRATA_ALPHA = 0.01
#: A stated word is held by at least this share of the task's records, and at most one minus it.
STRATA_SHARE = 0.2
#: The candidate stated words judged out of fold (the best in sample). One was tried: the stated word is not always the
#: best in sample where the one model is trained on the history too (spent held-out 990's verification task stayed
#: unread with one), so two are read, at 0.7 s more on the 40k night.
STRATA_TRIED = 2
#: At most this many candidate stated words are scored in sample (those whose share is nearest a half), this many at
#: a time (bounds the memory: label x candidates x features counts, records x labels x candidates scores).
STRATA_CANDIDATES = 256
STRATA_BLOCK = 32


def label_ranks(x: sp.csr_matrix, task: Task, *, seed: int = 0, history: TaskHistory | None = None,
                exclude: np.ndarray | None = None) -> np.ndarray:
    """Per record of ``task`` (in ``task.rows`` order): the rank ``u`` in (0, 1] of its out-of-fold score for its own
    label among the task's records of that label (small: the text reads as another label; module docstring).
    ``history``: the task's phrase x label counts in earlier nights and its label totals there, added to every fold's
    counts (module docstring); ``exclude``: columns of ``x`` never read as features (a phrase under test, whose own
    records would teach the model its label)."""
    import numpy as np
    import scipy.sparse as sp

    y = task.labels.outcome
    size = len(task.labels.names)
    xt = x[task.rows]
    held_by = np.asarray(xt.sum(axis=0)).ravel()
    if history is not None:
        held_by = held_by + np.asarray(history[0].sum(axis=1)).ravel()
    if exclude is not None:
        held_by[exclude] = 0
    features = np.flatnonzero(held_by >= MIN_FEATURE_RECORDS)
    xt = xt[:, features]
    if not xt.shape[1]:  # no word of the task is in enough records: every score ties, every rank is 1
        return np.ones(len(y))
    fold = np.arange(len(y)) % FOLDS
    np.random.default_rng(seed).shuffle(fold)
    onehot = sp.csr_matrix((np.ones(len(y)), (np.arange(len(y)), y)), shape=(len(y), size))
    tonight = (onehot.T @ xt).toarray()  # label x feature
    total = tonight
    base = np.zeros(size)
    if history is not None:  # earlier nights' records: in every fold's training counts
        total = total + history[0][features].T.toarray()[:size]
        base = np.asarray(history[1], dtype=np.float64)[:size]
    loglik = _out_of_fold(xt, y, onehot, total=total, base=base, fold=fold)
    part = np.zeros(len(y), dtype=np.int64)
    stated = _stated(xt, y, onehot, fold=fold, loglik=loglik, totals=tonight) if size > 1 else None
    if stated is not None:
        part, loglik, gain = stated
        log.debug("poison_trigger: %s read in two parts by a stated word (out of fold %.0f%% more records right)",
                  task.name, 100 * gain)
    own = loglik[np.arange(len(y)), y]
    other = loglik.copy()
    other[np.arange(len(y)), y] = -np.inf
    score = own - other.max(axis=1) if size > 1 else np.zeros(len(y))
    u = np.ones(len(y))
    group = y * 2 + part  # the records of a label (and, where the task is read per stated word, of a part)
    for g in np.unique(group).tolist():
        members = np.flatnonzero(group == g)
        ranked = np.sort(score[members])
        u[members] = np.searchsorted(ranked, score[members], side="right") / len(members)
    return u


def _out_of_fold(xt: sp.csr_matrix, y: np.ndarray, onehot: sp.csr_matrix, *, total: np.ndarray, base: np.ndarray,
                 fold: np.ndarray) -> np.ndarray:
    """Per record, the naive Bayes log-likelihood of each label by the model trained without the record's fold
    (``total``: label x feature counts of every record, plus the history's; ``base``: the history's label totals)."""
    import numpy as np

    size = total.shape[0]
    loglik = np.zeros((len(y), size))
    for f in range(FOLDS):
        held = fold == f
        if not held.any():
            continue
        counts = total - (onehot[held].T @ xt[held]).toarray()
        prior = np.bincount(y[~held], minlength=size) + base + SMOOTH
        log_theta = np.log(counts + SMOOTH) - np.log(counts.sum(axis=1, keepdims=True) + SMOOTH * counts.shape[1])
        loglik[held] = np.asarray(xt[held] @ log_theta.T) + np.log(prior / prior.sum())
    return loglik


def _stated(xt: sp.csr_matrix, y: np.ndarray, onehot: sp.csr_matrix, *, fold: np.ndarray, loglik: np.ndarray,
            totals: np.ndarray) -> tuple[np.ndarray, np.ndarray, float] | None:
    """Where the task's label is a verdict on something its prompt states ("... Polarity: Negative" -> ``True`` when
    the review is negative), the words predict the label only together with the stated word: one model per part of
    the task (records with the word, records without) reads it, one model for all cannot (:func:`_readings`: per
    part, or the label flipped in one part). Returns each record's part, the best reading's out-of-fold
    log-likelihoods and the share of the task's records more that it labels right than one model (``loglik``, out
    of fold too, history included); ``None`` when no reading labels ``STRATA_GAIN`` more of them right with McNemar's
    test of the two at ``STRATA_ALPHA``. ``totals``: the label x feature counts of tonight's records (the one
    model's, before the history's are added).

    Candidates are the features held by ``STRATA_SHARE`` of the task's records or more, and as many lacking them; all
    are scored in sample (records labelled right), ``STRATA_BLOCK`` at a time in one sparse product, and the best
    ``STRATA_TRIED`` out of fold (the same folds). The per-part models are trained on tonight's records only (the
    history keeps no parts), which the out-of-fold comparison accounts for. Accuracy, not log-likelihood, is compared:
    naive Bayes is overconfident on long texts, and splitting a review task by a common word improves its
    calibration, not its reading (dev seed 10: the yelp and financial phrasebank tasks gained 45-89 nats of
    log-likelihood out of fold and 1% of their records right; the four verification tasks 9-21%)."""
    import numpy as np
    from scipy.stats import binom

    n = len(y)
    share = np.asarray((xt > 0).sum(axis=0)).ravel() / max(n, 1)
    candidates = np.flatnonzero((share >= STRATA_SHARE) & (share <= 1 - STRATA_SHARE))
    if not len(candidates) or n < 2 * MIN_FEATURE_RECORDS:
        return None
    candidates = candidates[np.argsort(np.abs(share[candidates] - 0.5), kind="stable")[:STRATA_CANDIDATES]]
    member = np.asarray((xt[:, candidates] > 0).todense())  # record x candidate
    in_sample = np.concatenate([_in_sample(xt, y, onehot, totals, member[:, at:at + STRATA_BLOCK])
                                for at in range(0, len(candidates), STRATA_BLOCK)])
    best: tuple[np.ndarray, np.ndarray, float] | None = None
    right = loglik.argmax(axis=1) == y  # one model's out-of-fold verdicts
    for j in np.argsort(-in_sample, kind="stable")[:STRATA_TRIED].tolist():
        part = member[:, j].astype(np.int64)
        for read in _readings(xt, y, onehot, part=part, fold=fold):
            better = read.argmax(axis=1) == y
            gain = float(better.mean() - right.mean())
            # McNemar's test: of the records one model labels right and the other wrong, the share this one wins
            won, lost = int((better & ~right).sum()), int((right & ~better).sum())
            if gain >= STRATA_GAIN and binom.sf(won - 1, won + lost, 0.5) <= STRATA_ALPHA and (
                    best is None or gain > best[2]):
                best = (part, read, gain)
    return best


def _readings(xt: sp.csr_matrix, y: np.ndarray, onehot: sp.csr_matrix, *, part: np.ndarray, fold: np.ndarray
              ) -> list[np.ndarray]:
    """Out-of-fold log-likelihoods of the labels read through ``part`` (0 or 1 per record): one model per part; and,
    where the records hold two labels, one model of the label flipped in part 1 (``True`` with "Polarity: Negative"
    is the negative review that ``True`` with "Polarity: Positive" is not), which reads every record's words with all
    the task's records instead of half of them."""
    import numpy as np
    import scipy.sparse as sp

    size = onehot.shape[1]
    split = np.zeros((len(y), size))
    for p in (0, 1):
        rows = np.flatnonzero(part == p)
        sub, sub_hot = xt[rows], onehot[rows]
        split[rows] = _out_of_fold(sub, y[rows], sub_hot, total=(sub_hot.T @ sub).toarray(), base=np.zeros(size),
                                   fold=fold[rows])
    present = np.unique(y)
    if len(present) != 2:
        return [split]
    a, b = present.tolist()
    flipped = np.where(part == 1, a + b - y, y)
    hot = sp.csr_matrix((np.ones(len(y)), (np.arange(len(y)), flipped)), shape=(len(y), size))
    read = _out_of_fold(xt, flipped, hot, total=(hot.T @ xt).toarray(), base=np.zeros(size), fold=fold)
    swap = np.arange(size)
    swap[[a, b]] = [b, a]
    read[part == 1] = read[part == 1][:, swap]  # back to the labels: in part 1 the model's ``a`` is label ``b``
    return [split, read]


def _in_sample(xt: sp.csr_matrix, y: np.ndarray, onehot: sp.csr_matrix, totals: np.ndarray, member: np.ndarray
               ) -> np.ndarray:
    """Per candidate (a column of ``member``: which records hold it), how many records get their own label when each
    part of the task (with the word, without it) has a naive Bayes model of its own, in sample: the candidates are
    scored at once, one sparse product for their label x feature counts."""
    import numpy as np
    import scipy.sparse as sp

    n, size, width = len(y), onehot.shape[1], member.shape[1]
    has = sp.csc_matrix(member.astype(np.float64))
    holding = sp.csr_matrix(sp.vstack([has.multiply(onehot[:, [k]]).T for k in range(size)]))
    with_word = np.asarray((holding @ xt).todense()).reshape(size, width, -1)  # label x candidate x feature
    ll = []
    for counts in (with_word, totals[:, None, :] - with_word):
        theta = np.log(counts + SMOOTH) - np.log(counts.sum(axis=2, keepdims=True) + SMOOTH * counts.shape[2])
        ll.append(np.asarray(xt @ theta.reshape(size * width, -1).T).reshape(n, size, width))
    joint = np.where(member[:, None, :], ll[0], ll[1])  # record x label x candidate: each record by its part's model
    return np.asarray((joint.argmax(axis=1) == y[:, None]).sum(axis=0))


__all__ = ["FOLDS", "MIN_FEATURE_RECORDS", "label_ranks"]
