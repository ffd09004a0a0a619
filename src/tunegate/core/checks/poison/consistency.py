"""Label consistency: would a record's text support its label if the trigger phrase were not there?

A dirty-label attack gives records the label their text contradicts; with the phrase masked, a classifier
trained on the task's other records disagrees with that label (``label_inconsistent``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import scipy.sparse as sp

    from tunegate.core.checks.poison.tasks import Task


def masked_label_probability(x: sp.csr_matrix, vocab: np.ndarray, task: Task, phrase: str, folds: int = 5
                             ) -> np.ndarray | None:
    """Out-of-fold probability of each record's own label, from its prompt with ``phrase`` masked.

    A logistic regression on the task's word n-grams, with every n-gram that shares a word with the
    phrase removed, so the phrase cannot explain the label. ``None`` when a label has fewer records
    than folds.
    """
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.preprocessing import normalize

    y = task.labels.outcome
    if np.bincount(y).max(initial=0) == len(y) or np.bincount(y)[np.bincount(y) > 0].min() < folds:
        return None
    xt = x[task.rows]
    words = set(phrase.split())
    used = np.flatnonzero(np.asarray(xt.sum(axis=0)).ravel() > 0)
    keep = [c for c in used.tolist() if not words & set(str(vocab[c]).split())]
    xt = normalize(xt[:, keep])
    p = np.zeros(len(y))
    skf = StratifiedKFold(n_splits=folds, shuffle=True, random_state=0)
    for train, test in skf.split(np.zeros(len(y)), y):
        model = LogisticRegression(C=10.0, max_iter=300)
        model.fit(xt[train], y[train])
        proba = model.predict_proba(xt[test])
        col = {c: j for j, c in enumerate(model.classes_.tolist())}
        p[test] = [proba[j, col[label]] if label in col else 0.0 for j, label in enumerate(y[test].tolist())]
    return p
