"""Embedding outliers: records far from everything trusted, judged against their own task or source.

Score: ``1 - mean cosine similarity of the record's k nearest neighbours in the reference``, where the
reference is, in order of preference, ``reference_dir`` (a history-layout index of a trusted corpus,
built with :func:`tunegate.core.history.update_history`), the history of accepted batches
(``history_dir``), or the batch itself (self excluded) when neither exists yet.

Threshold, set from the score distribution, not a fixed number: a record is an ``embedding_outlier`` when
its robust z-score ``(score - median) / (1.4826 * MAD)`` exceeds ``z`` (Iglewicz and Hoaglin's modified
z-score; 3.5 is their recommended cut-off), computed within its group (``task``, falling back to
``source``; or ``source``; or ``none``). The median is the group's own from 5 records on (the batch's
below); the MAD is the group's own from ``min_group`` records on, and below that (or when it is 0) the
pooled MAD of every record around its own group's median, since scores differ in level between tasks
but spread alike. The detail carries the
group, the threshold, the median and MAD it came from, and the reference used, so a reviewer can see why.

A whole task or source unlike the reference is therefore not flagged record by record (its records are
judged against their own centre); the metrics list the groups with the highest median score
(``farthest_groups``) so a new or shifted task shows in the report.
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

GROUP_BY = ("task", "source", "none")
_MAD_SCALE = 1.4826  # MAD of a normal distribution times this is its standard deviation
_MIN_CENTRE = 5  # a group's own median is its centre from this many records on


class EmbeddingOutlierCheck(EmbeddingCheck):
    """Flag records whose kNN distance to the reference is extreme for their group."""

    name = "embedding_outlier"

    def __init__(self, *, k: int = 10, z: float = 3.5, group_by: str = "task", min_group: int = 50,
                 reference_dir: str | None = None, **options: Any) -> None:
        super().__init__(**options)
        if not isinstance(k, int) or not 1 <= k <= 1000:
            raise ConfigError(f"embedding_outlier k must be an integer between 1 and 1000, got {k!r}")
        if not isinstance(z, (int, float)) or float(z) <= 0:
            raise ConfigError(f"embedding_outlier z must be a positive number (robust z-score cut-off), got {z!r}")
        if group_by not in GROUP_BY:
            raise ConfigError(f"embedding_outlier group_by must be one of {', '.join(GROUP_BY)}, got {group_by!r}")
        if not isinstance(min_group, int) or min_group < 3:
            raise ConfigError(f"embedding_outlier min_group must be an integer >= 3, got {min_group!r}")
        self.k = k
        self.z = float(z)
        self.group_by = group_by
        self.min_group = min_group
        self.reference_dir = reference_dir

    def run(self, batch: CanonicalBatch) -> CheckResult:
        import numpy as np

        started = time.perf_counter()
        n = batch.num_rows
        issues: list[BatchIssue] = []
        reference, ref_name = None, "batch"
        for name, path in (("reference", self.reference_dir), ("history", self.history_dir)):
            if path is None:
                continue
            loaded = self.open_history(path)
            if loaded.count >= self.k:
                reference, ref_name = loaded, name
                break
            issues.append(BatchIssue("reference_missing", "info",
                                     f"{name} {path} holds {loaded.count} records (< k={self.k}): not used"))
        vectors = self.vectors(batch)
        if n < 2:
            return CheckResult(self.key, [], issues, {"records": n, "reference": ref_name})
        if reference is not None:
            sims, _ = self.history_knn(batch, vectors, reference, self.k)
            kind = reference.kind
        else:
            sims, _, kind = self.batch_knn(batch, vectors, self.k)
        finite = np.isfinite(sims)
        mean_sim = np.where(finite, sims, 0).sum(axis=1) / np.maximum(finite.sum(axis=1), 1)
        score = (1.0 - mean_sim).astype(np.float64)
        groups = self._groups(batch)
        threshold, median, mad, own = self._thresholds(score, groups)
        flagged = np.flatnonzero(score > threshold)
        findings = [Finding(int(r), "embedding_outlier", round(float(score[r]), 4), {
            "group": groups[r], "threshold_from": "group" if own[r] else "pooled",
            "knn_similarity": round(float(mean_sim[r]), 4), "threshold": round(float(threshold[r]), 4),
            "median": round(float(median[r]), 4), "mad": round(float(mad[r]), 4), "z": self.z,
            "reference": ref_name}) for r in flagged.tolist()]
        metrics = {"records": n, "reference": ref_name, "reference_records": reference.count if reference else n,
                   "index": kind, "k": self.k, "z": self.z, "group_by": self.group_by,
                   "groups_own_threshold": len({g for g, o in zip(groups, own.tolist(), strict=True) if o}),
                   "outliers": len(findings), "score_median": round(float(np.median(score)), 4),
                   "farthest_groups": self._farthest_groups(score, groups),
                   **self.options()}
        log.info("embedding_outlier: %d of %d records are outliers (reference: %s, %d groups with their own "
                 "threshold); %.1f s", len(findings), n, ref_name, metrics["groups_own_threshold"],
                 time.perf_counter() - started)
        return CheckResult(self.key, findings, issues, metrics)

    def _groups(self, batch: CanonicalBatch) -> list[str]:
        n = batch.num_rows
        if self.group_by == "none":
            return ["(all)"] * n
        table = batch.read_columns(["task", "source"])
        tasks = table.column("task").to_pylist()
        sources = table.column("source").to_pylist()
        if self.group_by == "source":
            return [s or "(none)" for s in sources]
        return [t or s or "(none)" for t, s in zip(tasks, sources, strict=True)]

    def _farthest_groups(self, score: np.ndarray, groups: list[str], limit: int = 5) -> dict[str, float]:
        """Median score of the groups farthest from the reference (for the report; a whole new task is judged
        against its own centre, so its records are not outliers one by one)."""
        import numpy as np

        names, inverse = np.unique(np.array(groups, dtype=object), return_inverse=True)
        sizes = np.bincount(inverse)
        medians = {str(names[gi]): round(float(np.median(score[inverse == gi])), 4)
                   for gi in np.flatnonzero(sizes >= _MIN_CENTRE).tolist()}
        return dict(sorted(medians.items(), key=lambda kv: (-kv[1], kv[0]))[:limit])

    def _thresholds(self, score: np.ndarray, groups: list[str]
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per record: threshold, the centre and MAD it came from, and whether the group had its own MAD."""
        import numpy as np

        n = len(score)
        median = np.full(n, float(np.median(score)))  # groups under _MIN_CENTRE records: the pooled median
        _, inverse = np.unique(np.array(groups, dtype=object), return_inverse=True)
        sizes = np.bincount(inverse)
        for gi in np.flatnonzero(sizes >= _MIN_CENTRE).tolist():
            rows = inverse == gi
            median[rows] = float(np.median(score[rows]))
        deviation = np.abs(score - median)
        pooled_mad = float(np.median(deviation))  # the typical spread of a record around its group's centre
        mad = np.full(n, pooled_mad)
        own = np.zeros(n, dtype=bool)
        for gi in np.flatnonzero(sizes >= self.min_group).tolist():
            rows = inverse == gi
            d = float(np.median(deviation[rows]))
            if d > 0:
                mad[rows] = d
                own[rows] = True
        safe_mad = np.where(mad > 0, mad, np.inf)  # all scores equal: nothing stands out
        threshold = median + self.z * _MAD_SCALE * safe_mad
        return threshold, median, mad, own
