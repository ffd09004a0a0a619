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

What the statistics cannot support is said, not guessed (``metrics["status"]`` is ``insufficient_data``
with a ``status_reason`` and an ``info`` issue ``check_skipped`` when nothing could be judged; groups left
out are named in an ``info`` issue when others were judged):

- a reference of fewer than ``k`` records other than the record itself;
- a group of fewer than 5 records (no centre of its own);
- a group without a common shape: its typical record's mean similarity to its nearest neighbours is
  below ``min_typical_similarity`` (0.6). Free-form instructions (Alpaca, GPTeacher role-play,
  Self-Instruct, OASST) are all unlike each other; a record further from its neighbours than the others
  is still an ordinary instruction there (measured on those corpora: every one of the records flagged
  before this rule was fine, bench/faiss/RESULTS.md);
- a spread below ``min_spread`` (0.05 cosine, the hashing sketch's noise on far pairs is ~0.06): a group of
  near-identical scores (P3 prompts of one review, one-word inputs under one instruction) would otherwise
  flag records 0.02 from the centre. The MAD used is ``max(MAD, min_spread)``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from tunegate.core.checks._vectors import EmbeddingCheck, EmbeddingConfig, score_histogram
from tunegate.core.checks.base import BatchIssue, CanonicalBatch, CheckResult, Finding
from tunegate.core.checks.config import CheckConfig, choice, integer, number, optional_path
from tunegate.core.reasons import CHECK_SKIPPED as SKIPPED
from tunegate.core.reasons import INSUFFICIENT_DATA as INSUFFICIENT

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)

GROUP_BY = ("task", "source", "none")
_MAD_SCALE = 1.4826  # MAD of a normal distribution times this is its standard deviation
_MIN_CENTRE = 5  # a group's own median is its centre from this many records on


@dataclass(frozen=True)
class OutlierConfig(EmbeddingConfig):
    """``k``: neighbours in the reference; ``z``: robust z-score cut-off; ``group_by``: ``task`` (falling back
    to ``source``), ``source`` or ``none``; ``min_group``: records for a group's own MAD; ``min_spread``:
    the smallest MAD used (cosine distance); ``min_typical_similarity``: a group whose typical kNN
    similarity is below it has no common shape and is not judged; ``reference_dir``: a trusted corpus in
    history layout, preferred to the history as the reference."""

    check: ClassVar[str] = "embedding_outlier"

    k: int = 10
    z: float = 3.5
    group_by: str = "task"
    min_group: int = 50
    min_spread: float = 0.05
    min_typical_similarity: float = 0.6
    reference_dir: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        integer(self, "k", minimum=1, maximum=1000)
        number(self, "z", low=0.0, low_open=True)
        choice(self, "group_by", GROUP_BY)
        integer(self, "min_group", minimum=3)
        number(self, "min_spread", low=0.0, high=1.0, high_open=True)
        number(self, "min_typical_similarity", low=-1.0, high=1.0)
        optional_path(self, "reference_dir")


class EmbeddingOutlierCheck(EmbeddingCheck):
    """Flag records whose kNN distance to the reference is extreme for their group."""

    name = "embedding_outlier"
    config_class: ClassVar[type[CheckConfig]] = OutlierConfig
    config: OutlierConfig

    def run(self, batch: CanonicalBatch) -> CheckResult:
        import numpy as np

        started = time.perf_counter()
        n = batch.num_rows
        issues: list[BatchIssue] = []
        reference, ref_name = None, "batch"
        for name, path in (("reference", self.config.reference_dir), ("history", self.config.history_dir)):
            if path is None:
                continue
            loaded = self.open_history(path)
            if loaded.count >= self.config.k:
                reference, ref_name = loaded, name
                break
            issues.append(BatchIssue("reference_missing", "info",
                                     f"{name} {path} holds {loaded.count} records (< k={self.config.k}): not used"))
        vectors = self.vectors(batch)
        base = {"records": n, "reference": ref_name, "k": self.config.k, "z": self.config.z,
                "group_by": self.config.group_by,
                "min_spread": self.config.min_spread, "min_typical_similarity": self.config.min_typical_similarity,
                "history_generation": (int(reference.manifest.get("generation", 0))
                                       if reference is not None and ref_name == "history" else None),
                "history_dir": self.config.history_dir, "batch_id": self.config.batch_id}
        available = reference.count if reference is not None else n - 1
        if available < self.config.k:
            reason = (f"the {ref_name} holds {available} records to compare with, fewer than k={self.config.k}: "
                      "too few for a nearest-neighbour score")
            return self._insufficient(base, issues, reason, started)
        if reference is not None:
            sims, _ = self.history_knn(batch, vectors, reference, self.config.k)
            kind = reference.kind
        else:
            sims, _, kind = self.batch_knn(batch, vectors, self.config.k)
        finite = np.isfinite(sims)
        mean_sim = np.where(finite, sims, 0).sum(axis=1) / np.maximum(finite.sum(axis=1), 1)
        score = (1.0 - mean_sim).astype(np.float64)
        groups = self._groups(batch)
        threshold, median, mad, own, skipped = self._thresholds(score, groups)
        judged = np.isfinite(threshold)
        flagged = np.flatnonzero(judged & (score > threshold))
        findings = [Finding(int(r), "embedding_outlier", round(float(score[r]), 4), {
            "group": groups[r], "threshold_from": "group" if own[r] else "pooled",
            "knn_similarity": round(float(mean_sim[r]), 4), "threshold": round(float(threshold[r]), 4),
            "median": round(float(median[r]), 4), "mad": round(float(mad[r]), 4), "z": self.config.z,
            "reference": ref_name}) for r in flagged.tolist()]
        metrics = {**base, "reference_records": reference.count if reference else n, "index": kind,
                   "records_judged": int(judged.sum()),
                   "groups_own_threshold": len({g for g, o in zip(groups, own.tolist(), strict=True) if o}),
                   "groups_not_judged": {why: len(names) for why, names in skipped.items()},
                   "outliers": len(findings), "score_median": round(float(np.median(score)), 4),
                   "farthest_groups": self._farthest_groups(score, groups),
                   # for the report: the robust z-score of every judged record (flagged above z)
                   "z_histogram": score_histogram(
                       ((score - median) / (_MAD_SCALE * np.maximum(mad, self.config.min_spread)))[judged],
                       low=-5.0, high=15.0, bins=40),
                   **self.options()}
        left_out = int((~judged).sum())
        if not judged.any():
            reason = "no group can be judged: " + self._skipped_text(skipped)
            return self._insufficient({**metrics, **base}, issues, reason, started)
        metrics["status"] = "ok"
        metrics["status_reason"] = (f"{int(judged.sum())} of {n} records judged against their group"
                                    + (f"; {left_out} not: " + self._skipped_text(skipped) if left_out else ""))
        if left_out:
            issues.append(BatchIssue(SKIPPED, "info", f"embedding_outlier: {left_out} of {n} records not judged: "
                                     + self._skipped_text(skipped)))
        log.info("embedding_outlier: %d of %d records are outliers (reference: %s, %d records judged, %d groups with "
                 "their own threshold); %.1f s", len(findings), n, ref_name, int(judged.sum()),
                 metrics["groups_own_threshold"], time.perf_counter() - started)
        return CheckResult(self.key, findings, issues, metrics)

    def _insufficient(self, metrics: dict[str, Any], issues: list[BatchIssue], reason: str, started: float
                      ) -> CheckResult:
        log.info("embedding_outlier: not judged: %s; %.1f s", reason, time.perf_counter() - started)
        issues = [*issues, BatchIssue(SKIPPED, "info", f"embedding_outlier: {reason}")]
        return CheckResult(self.key, [], issues, {**metrics, "status": INSUFFICIENT, "status_reason": reason,
                                                  "outliers": 0, **self.options()})

    @staticmethod
    def _skipped_text(skipped: dict[str, list[str]]) -> str:
        parts = []
        for why, names in skipped.items():
            shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
            parts.append(f"{len(names)} groups {why} ({shown})")
        return "; ".join(parts)

    def _groups(self, batch: CanonicalBatch) -> list[str]:
        n = batch.num_rows
        if self.config.group_by == "none":
            return ["(all)"] * n
        table = batch.read_columns(["task", "source"])
        tasks = table.column("task").to_pylist()
        sources = table.column("source").to_pylist()
        if self.config.group_by == "source":
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
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, list[str]]]:
        """Per record: threshold (``inf`` where its group is not judged), the centre and MAD it came from,
        whether the group had its own MAD; and the groups not judged, by reason."""
        import numpy as np

        n = len(score)
        median = np.full(n, np.nan)
        names, inverse = np.unique(np.array(groups, dtype=object), return_inverse=True)
        sizes = np.bincount(inverse)
        skipped: dict[str, list[str]] = {}
        judged_groups = np.zeros(len(names), dtype=bool)
        for gi in range(len(names)):
            rows = inverse == gi
            if sizes[gi] < _MIN_CENTRE:
                skipped.setdefault(f"of fewer than {_MIN_CENTRE} records", []).append(str(names[gi]))
                continue
            centre = float(np.median(score[rows]))
            median[rows] = centre
            if 1.0 - centre < self.config.min_typical_similarity:
                skipped.setdefault("without a common shape (typical kNN similarity < "
                                   f"{self.config.min_typical_similarity})",
                                   []).append(str(names[gi]))
                continue
            judged_groups[gi] = True
        judged = judged_groups[inverse]
        deviation = np.abs(score - np.where(np.isnan(median), 0.0, median))
        # the typical spread of a record around its own group's centre, over the groups that are judged
        pooled_mad = float(np.median(deviation[judged])) if judged.any() else 0.0
        mad = np.full(n, pooled_mad)
        own = np.zeros(n, dtype=bool)
        for gi in np.flatnonzero(judged_groups & (sizes >= self.config.min_group)).tolist():
            rows = inverse == gi
            d = float(np.median(deviation[rows]))
            if d > 0:
                mad[rows] = d
                own[rows] = True
        spread = np.maximum(mad, self.config.min_spread)
        threshold = np.where(judged & (spread > 0), median + self.config.z * _MAD_SCALE * spread, np.inf)
        return threshold, np.where(np.isnan(median), 0.0, median), mad, own, skipped
