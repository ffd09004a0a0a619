"""Novelty against the history: a label skew the pipeline's earlier nights already show is not evidence.

Within one batch a natural label cue and a small planted campaign have the same evidence and exclusivity
(docs/poison.md, detection floor). Across nights they differ: a natural cue ("very disappointed" -> negative)
steers the same label in every night; a planted trigger is new, or its skew is. With a history
(:mod:`.phrase_history`), the expected rate of a label among the records of a task that hold a phrase is not the
task's base rate ``p`` but the posterior mean of a Beta prior centred on ``p``, worth ``weight`` records, updated
by the history's records of that task with that phrase: ``(h + weight * p) / (H + weight)`` for ``h`` of ``H``
with that label. A phrase the history has never seen in the task keeps the base rate (its evidence is today's); a
natural cue the history shows steering the same label loses its evidence; a phrase whose labels were mixed in the
history and are skewed tonight keeps it, and one that steered the other label gains.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import scipy.sparse as sp

#: Per task: (phrase column x label counts of the history's records, the task's label totals there).
TaskHistory = tuple["sp.csr_matrix", "np.ndarray"]


def expected_rate(history: TaskHistory, cols: np.ndarray, labels: np.ndarray, base: np.ndarray, weight: float
                  ) -> np.ndarray:
    """Expected share of ``labels`` among the task's records with phrase ``cols``: the base rate ``base``,
    worth ``weight`` records, updated by the history's counts of the phrase in the task."""
    import numpy as np

    counts = history[0]
    hits = np.asarray(counts[cols, labels]).ravel()
    seen = np.asarray(counts[cols].sum(axis=1)).ravel()
    return np.asarray((hits + weight * base) / (seen + weight))


def history_rates(history: TaskHistory | None, cols: np.ndarray, base: np.ndarray, weight: float
                  ) -> tuple[np.ndarray, np.ndarray]:
    """For phrase columns ``cols`` of one task: the expected rate of every label (rows: phrases; the posterior mean
    of a Beta prior centred on ``base`` worth ``weight`` records), and the history's records with each phrase."""
    import numpy as np

    if history is None:
        return np.tile(base, (len(cols), 1)), np.zeros(len(cols))
    counts = history[0][cols].toarray()
    seen = counts.sum(axis=1)
    return (counts + weight * base) / (seen + weight)[:, None], seen
