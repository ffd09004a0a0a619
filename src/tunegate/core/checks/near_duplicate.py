"""Near-duplicates within the batch and against the history of accepted batches; contributor floods.

Reasons:

``near_duplicate``
    The record's cosine similarity with a kept record is at least ``threshold`` (absolute, default 0.95
    on the ``hashing`` backend, 0.98 on ``static``: the cosine is the mean of the per-field cosines, see
    :mod:`tunegate.core.embeddings`). The kept record (*representative*) is a history record when one
    is that close, otherwise the earliest record of its cluster in the batch. Detail: ``representative``
    (its id), ``similarity``, ``in`` (``history`` or ``batch``), ``cluster_size``, ``exact_copy``.
``contributor_flood``
    A contributor whose share of near-duplicate records is anomalous: one-sided binomial test of their
    count against the batch-wide rate, Bonferroni-corrected over contributors, at ``flood_alpha``, and at
    least ``flood_min`` such records. Every near-duplicate record of that contributor is flagged
    (representatives included, so the whole flood is set aside) and a ``warning`` batch issue names them.

Clustering: the batch's k-nearest-neighbour graph keeps edges with similarity >= ``threshold``; in each
connected component, records are taken in batch order and each joins the most similar representative
already chosen if that similarity (computed exactly) is >= ``threshold``, else becomes a representative.
So a flagged record is always within ``threshold`` of its representative (no chaining), and a flood of
thousands of copies ends as one cluster although each record sees only ``k`` neighbours.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from tunegate.core.checks._vectors import EmbeddingCheck
from tunegate.core.checks.base import BatchIssue, CanonicalBatch, CheckResult, Finding
from tunegate.exceptions import ConfigError

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)

#: Absolute cosine similarity for a near-duplicate with the ``hashing`` backend over all three fields.
#: Measured on 16k real records plus 1,000 lightly edited copies (bench/faiss/RESULTS.md): 99.2% of the
#: edited copies score >= 0.95; distinct records between 0.90 and 0.95 are mostly same-template pairs
#: whose one short varying field differs (``2 0 -> 2`` vs ``4 2 -> 2``, STS pairs with the same score).
DEFAULT_THRESHOLD = 0.95
#: Per backend: their cosines are on different scales. ``static`` measured the same way (94% of the edits
#: caught at 0.98, with as few distinct matches as hashing at 0.95); ``minilm`` is not calibrated yet, so
#: it needs an explicit ``threshold``.
DEFAULT_THRESHOLDS = {"hashing": DEFAULT_THRESHOLD, "static": 0.98}
_HISTORY_K = 10  # one history search of k=10 serves embedding_outlier too (same cost as k=1 on IVF)
_MAX_REPS_SCANNED = 256  # above this many representatives in one component, compare with neighbours' only


class NearDuplicateCheck(EmbeddingCheck):
    """Cluster near-duplicates, keep one representative per cluster, flag the rest (and floods)."""

    name = "near_duplicate"

    def __init__(self, *, threshold: float | None = None, k: int = 10, flood_min: int = 10,
                 flood_alpha: float = 0.001, **options: Any) -> None:
        super().__init__(**options)
        if threshold is None:
            if self.spec.backend not in DEFAULT_THRESHOLDS:
                raise ConfigError(f"near_duplicate: no calibrated threshold for the {self.spec.backend!r} backend yet; "
                                  "pass threshold= (a cosine similarity, e.g. 0.95) after measuring it on your data")
            threshold = DEFAULT_THRESHOLDS[self.spec.backend]
        if not isinstance(threshold, (int, float)) or not 0.0 < float(threshold) <= 1.0:
            raise ConfigError(f"near_duplicate threshold must be a cosine similarity in (0, 1], got {threshold!r}")
        if not isinstance(k, int) or not 1 <= k <= 1000:
            raise ConfigError(f"near_duplicate k must be an integer between 1 and 1000, got {k!r}")
        if not isinstance(flood_min, int) or flood_min < 1:
            raise ConfigError(f"near_duplicate flood_min must be a positive integer, got {flood_min!r}")
        if not isinstance(flood_alpha, (int, float)) or not 0.0 < float(flood_alpha) < 1.0:
            raise ConfigError(f"near_duplicate flood_alpha must be a probability in (0, 1), got {flood_alpha!r}")
        self.threshold = float(threshold)
        self.k = k
        self.flood_min = flood_min
        self.flood_alpha = float(flood_alpha)

    def run(self, batch: CanonicalBatch) -> CheckResult:
        import numpy as np

        started = time.perf_counter()
        n = batch.num_rows
        meta = batch.read_columns(["id", "content_sha256", "contributor"])
        ids = meta.column("id").to_pylist()
        digests = meta.column("content_sha256").to_pylist()
        issues: list[BatchIssue] = []
        history = self.open_history(self.history_dir) if self.history_dir is not None else None
        if history is not None:
            issues += [BatchIssue("history_missing", "info", note) for note in history.notes]
        vectors = self.vectors(batch)

        # 1. against the history: the best match of each record
        hist_sim = np.full(n, -np.inf, dtype=np.float32)
        hist_pos = np.full(n, -1, dtype=np.int64)
        if history is not None and history.count:
            s, p = self.history_knn(batch, vectors, history, _HISTORY_K)
            hist_sim, hist_pos = s[:, 0], p[:, 0]
        in_history = hist_sim >= self.threshold

        # 2. within the batch: kNN graph -> components -> representatives in batch order
        rep = np.full(n, -1, dtype=np.int64)
        rep_sim = np.zeros(n, dtype=np.float32)
        kind = "none"
        if n > 1:
            sims, nbrs, kind = self.batch_knn(batch, vectors, self.k)
            rep, rep_sim = self._cluster(vectors, sims, nbrs, in_history)

        findings: list[Finding] = []
        hist_ids: list[Any] = []
        hist_batch: list[Any] = []
        batch_names: list[str] = []
        if history is not None and in_history.any():
            hist_ids = history.column("id", hist_pos[in_history])
            hist_batch = history.column("batch", hist_pos[in_history])
            batch_names = [b["batch_id"] for b in history.manifest["batches"]]
        for row, rid, b in zip(np.flatnonzero(in_history).tolist(), hist_ids, hist_batch, strict=True):
            sim = float(hist_sim[row])
            findings.append(Finding(row, "near_duplicate", round(sim, 4), {
                "representative": rid, "similarity": round(sim, 4), "in": "history",
                "history_batch": batch_names[b] if b is not None and b < len(batch_names) else None}))
        members = np.flatnonzero(rep >= 0)
        sizes = np.bincount(rep[members], minlength=n) if len(members) else np.zeros(n, dtype=np.int64)
        for row in members.tolist():
            r = int(rep[row])
            sim = float(rep_sim[row])
            findings.append(Finding(row, "near_duplicate", round(sim, 4), {
                "representative": ids[r], "representative_row": r, "similarity": round(sim, 4), "in": "batch",
                "cluster_size": int(sizes[r]) + 1, "exact_copy": digests[r] == digests[row]}))

        involved = in_history | (rep >= 0) | (sizes > 0)
        flood_findings, flood_issues, flooders = self._floods(meta.column("contributor").to_pylist(), involved)
        findings += flood_findings
        issues += flood_issues
        clusters = int((sizes > 0).sum())
        metrics = {
            "records": n, "threshold": self.threshold, "k": self.k, "batch_index": kind,
            "history_records": history.count if history is not None else 0,
            "history_index": history.kind if history is not None else "none",
            "near_duplicates_of_history": int(in_history.sum()), "near_duplicates_in_batch": len(members),
            "clusters": clusters, "flooding_contributors": flooders, **self.options(),
        }
        log.info("near_duplicate: %d of %d records are near-duplicates (%d of history, %d in %d batch clusters); "
                 "%d flooding contributors; %.1f s", int(in_history.sum()) + len(members), n, int(in_history.sum()),
                 len(members), clusters, len(flooders), time.perf_counter() - started)
        return CheckResult(self.key, findings, issues, metrics)

    def _cluster(self, vectors: np.ndarray, sims: np.ndarray, nbrs: np.ndarray,
                 in_history: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Representative row of each flagged record (``-1`` for kept ones) and the similarity to it."""
        import numpy as np

        n = len(vectors)
        t = self.threshold
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
                best = int(np.argmax(s))
                if s[best] >= t:
                    rep[i], rep_sim[i] = candidates[best], s[best]
                    continue
            reps.append(i)
            is_rep[i] = True
        return rep, rep_sim

    def _floods(self, contributors: list[str | None], involved: np.ndarray
                ) -> tuple[list[Finding], list[BatchIssue], list[str]]:
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
        alpha = self.flood_alpha / len(uniq)
        findings: list[Finding] = []
        issues: list[BatchIssue] = []
        flooders: list[str] = []
        rows_known = np.flatnonzero(known)
        for ci, name in enumerate(uniq.tolist()):
            d, m = int(per_dups[ci]), int(per_records[ci])
            if d < self.flood_min or rate >= 1.0:
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
