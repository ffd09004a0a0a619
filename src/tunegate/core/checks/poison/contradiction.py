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
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import scipy.sparse as sp

    from tunegate.core.checks.poison.novelty import TaskHistory
    from tunegate.core.checks.poison.tasks import Task

#: Folds of the out-of-fold scores.
FOLDS = 4
#: An n-gram is a feature of a task's model when at least this many of the task's records hold it.
MIN_FEATURE_RECORDS = 10
#: Add-one (Laplace) smoothing of the feature counts.
SMOOTH = 1.0


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
    total = (onehot.T @ xt).toarray()  # label x feature
    base = np.zeros(size)
    if history is not None:  # earlier nights' records: in every fold's training counts
        total = total + history[0][features].T.toarray()[:size]
        base = np.asarray(history[1], dtype=np.float64)[:size]
    loglik = np.zeros((len(y), size))
    for f in range(FOLDS):
        held = fold == f
        if not held.any():
            continue
        counts = total - (onehot[held].T @ xt[held]).toarray()
        prior = np.bincount(y[~held], minlength=size) + base + SMOOTH
        log_theta = np.log(counts + SMOOTH) - np.log(counts.sum(axis=1, keepdims=True) + SMOOTH * counts.shape[1])
        loglik[held] = np.asarray(xt[held] @ log_theta.T) + np.log(prior / prior.sum())
    own = loglik[np.arange(len(y)), y]
    other = loglik.copy()
    other[np.arange(len(y)), y] = -np.inf
    score = own - other.max(axis=1) if size > 1 else np.zeros(len(y))
    u = np.ones(len(y))
    for label in np.unique(y).tolist():
        members = np.flatnonzero(y == label)
        ranked = np.sort(score[members])
        u[members] = np.searchsorted(ranked, score[members], side="right") / len(members)
    return u


__all__ = ["FOLDS", "MIN_FEATURE_RECORDS", "label_ranks"]
