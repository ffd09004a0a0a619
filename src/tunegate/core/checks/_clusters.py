"""Clustering of near-duplicates inside a batch, and contributor floods (near_duplicate).

:func:`representatives`: the batch's kNN graph keeps edges with similarity >= ``threshold``; in each
connected component, records are taken in batch order and each joins the most similar representative
already chosen whose similarity (computed exactly) is >= ``threshold`` and that verification accepts
(most similar first, at most 8 tried), else becomes a representative. :func:`floods`: contributors whose
count of near-duplicate records is anomalous (binomial test, Bonferroni-corrected).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from tunegate.core.checks.base import BatchIssue, Finding

if TYPE_CHECKING:
    import numpy as np

_MAX_REPS_SCANNED = 256  # above this many representatives in one component, compare with neighbours' only
MAX_VERIFIED = 8  # candidates verified per record, most similar first (bounds the work in template clusters)


def representatives(vectors: np.ndarray, sims: np.ndarray, nbrs: np.ndarray, in_history: np.ndarray,
                    same: Callable[[int, int], bool], *, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Representative row of each flagged record (``-1`` for kept ones) and the similarity to it."""
    import numpy as np

    n = len(vectors)
    t = threshold
    edge = (sims >= t) & (nbrs >= 0)
    src = np.repeat(np.arange(n), nbrs.shape[1])[edge.ravel()]
    dst = nbrs[edge]
    rep = np.full(n, -1, dtype=np.int64)
    rep_sim = np.zeros(n, dtype=np.float32)
    if len(src) == 0:
        return rep, rep_sim
    label = _components(n, src, dst)
    sizes = np.bincount(label)
    rows = np.flatnonzero(sizes[label] > 1)
    rows = rows[np.lexsort((rows, label[rows]))]  # by component, then batch order
    both_src, both_dst = np.concatenate((src, dst)), np.concatenate((dst, src))
    order = np.argsort(both_src, kind="stable")
    adj_dst = both_dst[order]
    adj_ptr = np.searchsorted(both_src[order], np.arange(n + 1))
    is_rep = np.zeros(n, dtype=bool)
    reps: list[int] = []
    current = -1
    for i in rows.tolist():
        if label[i] != current:
            current, reps = int(label[i]), []
        if in_history[i]:
            continue  # already flagged against the history; never a representative
        if len(reps) <= _MAX_REPS_SCANNED:
            candidates = reps
        else:  # a long chain of slowly drifting records: look only where the graph points
            near = adj_dst[adj_ptr[i]:adj_ptr[i + 1]]
            candidates = sorted({int(rep[j]) if rep[j] >= 0 else int(j) for j in near
                                 if j < i and (rep[j] >= 0 or is_rep[j])})
        if candidates:
            s = vectors[candidates] @ vectors[i]
            order = np.argsort(-s, kind="stable")[:MAX_VERIFIED]
            match = next((int(c) for c in order.tolist() if s[c] >= t and same(i, candidates[c])), -1)
            if match >= 0:
                rep[i], rep_sim[i] = candidates[match], s[match]
                continue
        reps.append(i)
        is_rep[i] = True
    return rep, rep_sim


def floods(contributors: list[str | None], involved: np.ndarray, *, flood_min: int, flood_alpha: float
           ) -> tuple[list[Finding], list[BatchIssue], list[str]]:
    """``contributor_flood`` findings and issues, and the flooding contributors' names."""
    import numpy as np

    known = np.array([c is not None and c != "" for c in contributors], dtype=bool)
    if not known.any():
        return [], [], []
    names = np.array([c if c else "" for c in contributors], dtype=object)
    total, dups = int(known.sum()), int((involved & known).sum())
    if dups == 0:
        return [], [], []
    rate = dups / total
    uniq, inverse = np.unique(names[known], return_inverse=True)
    per_records = np.bincount(inverse, minlength=len(uniq))
    per_dups = np.bincount(inverse, weights=involved[known].astype(np.float64), minlength=len(uniq)).astype(int)
    alpha = flood_alpha / len(uniq)
    findings: list[Finding] = []
    issues: list[BatchIssue] = []
    flooders: list[str] = []
    rows_known = np.flatnonzero(known)
    for ci, name in enumerate(uniq.tolist()):
        d, m = int(per_dups[ci]), int(per_records[ci])
        if d < flood_min or rate >= 1.0:
            continue
        p_value = binomial_tail(d, m, rate)
        if p_value >= alpha:
            continue
        flooders.append(name)
        share = d / m
        detail = {"contributor": name, "records": m, "near_duplicates": d, "share": round(share, 4),
                  "batch_share": round(rate, 4), "p_value": float(f"{p_value:.3g}")}
        rows = rows_known[(inverse == ci) & involved[rows_known]]
        findings += [Finding(int(r), "contributor_flood", round(share, 4), detail) for r in rows]
        issues.append(BatchIssue("contributor_flood", "warning",
                                 f"contributor {name!r}: {d} of {m} records are near-duplicates ({share:.0%}) "
                                 f"against {rate:.1%} in the batch (binomial p={p_value:.2g})"))
    return findings, issues, flooders


def _components(n: int, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Connected-component label (smallest member) of each of ``n`` nodes, by min-label propagation
    with pointer jumping (a few passes over the edges; scipy.sparse.csgraph costs seconds to import)."""
    import numpy as np

    label = np.arange(n)
    while True:
        m = np.minimum(label[src], label[dst])
        new = label.copy()
        np.minimum.at(new, src, m)
        np.minimum.at(new, dst, m)
        while True:  # pointer jumping: follow labels to their root
            jumped = new[new]
            if np.array_equal(jumped, new):
                break
            new = jumped
        if np.array_equal(new, label):
            return label
        label = new


def binomial_tail(d: int, m: int, p: float) -> float:
    """``P(X >= d)`` for ``X ~ Binomial(m, p)``, summed in log space from the pmf recurrence."""
    import math

    import numpy as np

    if d <= 0:
        return 1.0
    if d > m or p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    log_first = (math.lgamma(m + 1) - math.lgamma(d + 1) - math.lgamma(m - d + 1) + d * math.log(p)
                 + (m - d) * math.log1p(-p))
    i = np.arange(d, m, dtype=np.float64)
    logs = log_first + np.concatenate(([0.0], np.cumsum(np.log((m - i) / (i + 1)) + math.log(p) - math.log1p(-p))))
    top = float(logs.max())
    return min(1.0, math.exp(top) * float(np.exp(logs - top).sum()))
