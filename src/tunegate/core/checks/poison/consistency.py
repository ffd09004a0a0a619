"""Label consistency: would a record's text support its label if the trigger phrase were not there?

A dirty-label attack gives records the label their text contradicts; with the phrase masked, a classifier
trained on the task's *other* records (those without the phrase) disagrees with that label
(``label_inconsistent``).

Cost is bounded whatever the task size: one fit per (phrase, task) on at most ``max_train`` records drawn
from the task's records without the phrase (stratified by label, fixed seed). Until 2026-12 this was a 5-fold
out-of-fold fit over the whole task for every record; at 200k records that was 82% of ``poison_trigger``'s
time (163 of 199 s, cProfile) and at 1M it did not finish in 35 minutes (issue 13).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import scipy.sparse as sp

    from tunegate.core.checks.poison.tasks import Task

#: Records of a task the classifier is trained on, at most (drawn per label in proportion, fixed seed).
MAX_TRAIN = 2000
#: Each label needs this many training records, else the task's labels are not learnable here (``None``).
MIN_PER_LABEL = 5


def masked_label_probability(x: sp.csr_matrix, vocab: np.ndarray, task: Task, phrase: str, local: np.ndarray, *,
                             max_train: int = MAX_TRAIN, seed: int = 0) -> np.ndarray | None:
    """Probability of each record ``local`` (positions in ``task.rows``) having its own label, from its prompt
    with ``phrase`` masked, by a classifier trained on the task's records that are not in ``local``.

    A logistic regression on the task's word n-grams, with every n-gram that shares a word with the phrase
    removed, so the phrase cannot explain the label. ``None`` when fewer than two labels have
    ``MIN_PER_LABEL`` training records each.
    """
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import normalize
    from threadpoolctl import threadpool_limits

    y = task.labels.outcome
    local = np.asarray(local, dtype=np.int64)
    train = _stratified(np.setdiff1d(np.arange(len(y)), local), y, max_train, seed)
    counts = np.bincount(y[train], minlength=int(y.max(initial=0)) + 1)
    if len(local) == 0 or int((counts >= MIN_PER_LABEL).sum()) < 2:
        return None
    train = train[counts[y[train]] >= MIN_PER_LABEL]  # a label too rare to learn is left out, not guessed
    rows = task.rows[np.concatenate([train, local])]
    xt = x[rows]
    words = set(phrase.split())
    used = np.flatnonzero(np.asarray(xt.sum(axis=0)).ravel() > 0)
    keep = [c for c in used.tolist() if not words & set(str(vocab[c]).split())]
    xt = normalize(xt[:, keep])
    model = LogisticRegression(C=10.0, max_iter=300)
    # L-BFGS-B's BLAS calls are on single vectors: threads only spin on them, and when another process holds
    # a core each fit took 8 s instead of 0.3 s (bench/scale/RESULTS.md)
    with threadpool_limits(1, "blas"):
        model.fit(xt[: len(train)], y[train])
        proba = model.predict_proba(xt[len(train):])
    col = {c: j for j, c in enumerate(model.classes_.tolist())}
    return np.asarray([proba[j, col[label]] if label in col else 0.0 for j, label in enumerate(y[local].tolist())])


def _stratified(candidates: np.ndarray, y: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """At most ``limit`` of ``candidates``, each label keeping its share (at least one record), sorted."""
    import numpy as np

    if len(candidates) <= limit:
        return candidates
    rng = np.random.default_rng(seed)
    labels = y[candidates]
    chosen = []
    for label in np.unique(labels):
        members = candidates[labels == label]
        take = max(1, round(limit * len(members) / len(candidates)))
        chosen.append(rng.choice(members, size=min(take, len(members)), replace=False))
    return np.sort(np.concatenate(chosen))
