"""Near-duplicates within the batch and against the history of accepted batches; contributor floods.

The rule: a near-duplicate is the same training example said again. Records that share a passage or a
template but differ in what is asked or answered are distinct, and empty fields are not evidence of
similarity. FAISS proposes candidates (cosine >= ``threshold``); each candidate pair is then verified on
its words (:func:`pair_difference`, :class:`PairVerifier`): every field non-empty on either side must
agree, the answer word for word when short, the rest up to light edits (case, punctuation, typos, a
word or two, a moved sentence), and another prompt template around the same passage, question and
answer counts as the same example only when the differing text is template text (:class:`TemplateIndex`).

Reasons:

``near_duplicate``
    The record's cosine similarity with a kept record is at least ``threshold`` (absolute, default 0.95
    on the ``hashing`` backend, 0.98 on ``static``: the cosine is the mean of the per-field cosines, see
    :mod:`tunegate.core.embeddings`) and verification finds the same example. The kept record
    (*representative*) is a history record when one is that close, otherwise the earliest record of its
    cluster in the batch. Detail: ``representative`` (its id), ``similarity``, ``in`` (``history`` or
    ``batch``), ``cluster_size``, ``exact_copy``. History records are verified on the text of the
    accepted batch files the history manifest lists (read back by ``content_sha256``).
``contributor_flood``
    A contributor whose share of near-duplicate records is anomalous: one-sided binomial test of their
    count against the batch-wide rate, Bonferroni-corrected over contributors, at ``flood_alpha``, and at
    least ``flood_min`` such records. Every near-duplicate record of that contributor is flagged
    (representatives included, so the whole flood is set aside) and a ``warning`` batch issue names them.
``known_poison``
    With a history: the record repeats (exact copy or light edit, the same rule) a record confirmed as poison
    with ``tunegate review confirm``; see :mod:`.near_duplicate_poison`.

Clustering: the batch's k-nearest-neighbour graph keeps edges with similarity >= ``threshold``; in each
connected component, records are taken in batch order and each joins the most similar representative
already chosen whose similarity (computed exactly) is >= ``threshold`` and that verification accepts
(most similar first, at most 8 tried), else becomes a representative.
So a flagged record is always within ``threshold`` of its representative (no chaining), and a flood of
thousands of copies ends as one cluster although each record sees only ``k`` neighbours.

Modules: :mod:`._verify` (pair verification), :mod:`._edits` (the edit rule), :mod:`._templates` (template
text), :mod:`._clusters` (clustering, connected components, floods).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, ClassVar

from tunegate.core.checks._clusters import MAX_VERIFIED, binomial_tail, floods, representatives
from tunegate.core.checks._edits import VERIFY_CHARS, field_difference, field_words
from tunegate.core.checks._templates import TemplateIndex
from tunegate.core.checks._vectors import EmbeddingCheck, EmbeddingConfig, score_histogram
from tunegate.core.checks._verify import PairVerifier, pair_difference
from tunegate.core.checks.base import BatchIssue, CanonicalBatch, CheckResult, Finding
from tunegate.core.checks.config import CheckConfig, boolean, fraction, integer, number
from tunegate.exceptions import ConfigError

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


@dataclass(frozen=True)
class NearDuplicateConfig(EmbeddingConfig):
    """``threshold``: cosine for a candidate pair (``None``: the backend's calibrated default,
    :data:`DEFAULT_THRESHOLDS`; a backend without one needs it set); ``k``: neighbours per record in the
    batch's kNN graph; ``flood_min``, ``flood_alpha``: the contributor flood test; ``template_variants``:
    whether the same passage, question and answer under another prompt template is the same example (the
    default; a team that trains on template variants on purpose, P3/T0-style data, sets False)."""

    check: ClassVar[str] = "near_duplicate"

    threshold: float | None = None
    k: int = 10
    flood_min: int = 10
    flood_alpha: float = 0.001
    template_variants: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.threshold is not None:
            fraction(self, "threshold")
        elif self.embedding not in DEFAULT_THRESHOLDS:
            raise ConfigError(f"near_duplicate: no calibrated threshold for the {self.embedding!r} backend yet; "
                              "pass threshold= (a cosine similarity, e.g. 0.95) after measuring it on your data")
        integer(self, "k", minimum=1, maximum=1000)
        integer(self, "flood_min", minimum=1)
        number(self, "flood_alpha", low=0.0, high=1.0, low_open=True, high_open=True)
        boolean(self, "template_variants")

    @property
    def cosine_threshold(self) -> float:
        """``threshold``, or the backend's calibrated default when it is not set."""
        return self.threshold if self.threshold is not None else DEFAULT_THRESHOLDS[self.embedding]


class NearDuplicateCheck(EmbeddingCheck):
    """Cluster near-duplicates, keep one representative per cluster, flag the rest (and floods)."""

    name = "near_duplicate"
    config_class: ClassVar[type[CheckConfig]] = NearDuplicateConfig
    config: NearDuplicateConfig

    @property
    def threshold(self) -> float:
        return self.config.cosine_threshold

    @property
    def k(self) -> int:
        return self.config.k

    def run(self, batch: CanonicalBatch) -> CheckResult:
        import numpy as np

        started = time.perf_counter()
        n = batch.num_rows
        meta = batch.read_columns(["id", "content_sha256", "contributor"])
        ids = meta.column("id").to_pylist()
        digests = meta.column("content_sha256").to_pylist()
        issues: list[BatchIssue] = []
        history = self.open_history(self.config.history_dir) if self.config.history_dir is not None else None
        if history is not None:
            issues += [BatchIssue("history_missing", "info", note) for note in history.notes]
        vectors = self.vectors(batch)

        # candidates: the history records and batch neighbours at or above the threshold (FAISS, recall);
        # then each candidate pair is verified on its text (precision), see pair_difference
        hist_sim = np.full((n, 1), -np.inf, dtype=np.float32)
        hist_pos = np.full((n, 1), -1, dtype=np.int64)
        if history is not None and history.count:
            hist_sim, hist_pos = self.history_knn(batch, vectors, history, _HISTORY_K)
        sims = np.zeros((n, 0), dtype=np.float32)
        nbrs = np.zeros((n, 0), dtype=np.int64)
        kind = "none"
        if n > 1:
            sims, nbrs, kind = self.batch_knn(batch, vectors, self.k)
        hist_cand = (hist_sim >= self.threshold) & (hist_pos >= 0)
        batch_cand = (sims >= self.threshold) & (nbrs >= 0)
        needed = np.asarray(hist_cand.any(axis=1) | batch_cand.any(axis=1), dtype=bool)
        needed[nbrs[batch_cand]] = True
        verifier = PairVerifier(self.spec.fields, template_variants=self.config.template_variants)
        verifier.load_batch(batch, np.flatnonzero(needed), digests)
        hist_match = np.full(n, -1, dtype=np.int64)
        hist_best = np.zeros(n, dtype=np.float32)
        if hist_cand.any():
            assert history is not None
            issues += verifier.load_history(history, np.unique(hist_pos[hist_cand]))
            for row in np.flatnonzero(hist_cand.any(axis=1)).tolist():
                for c in np.flatnonzero(hist_cand[row]).tolist()[:MAX_VERIFIED]:
                    if verifier.same_as_history(row, int(hist_pos[row, c])):
                        hist_match[row], hist_best[row] = hist_pos[row, c], hist_sim[row, c]
                        break
        in_history = hist_match >= 0

        rep = np.full(n, -1, dtype=np.int64)
        rep_sim = np.zeros(n, dtype=np.float32)
        if n > 1:
            rep, rep_sim = representatives(vectors, sims, nbrs, in_history, verifier.same, threshold=self.threshold)

        findings: list[Finding] = []
        hist_ids: list[Any] = []
        hist_batch: list[Any] = []
        batch_names: list[str] = []
        if history is not None and in_history.any():
            hist_ids = history.column("id", hist_match[in_history])
            hist_batch = history.column("batch", hist_match[in_history])
            batch_names = [b["batch_id"] for b in history.manifest["batches"]]
        for row, rid, b in zip(np.flatnonzero(in_history).tolist(), hist_ids, hist_batch, strict=True):
            sim = float(hist_best[row])
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
        flood_findings, flood_issues, flooders = floods(meta.column("contributor").to_pylist(), involved,
                                                       flood_min=self.config.flood_min,
                                                       flood_alpha=self.config.flood_alpha)
        findings += flood_findings
        issues += flood_issues
        known: dict[str, Any] = {}
        if history is not None:  # copies of confirmed poison (tunegate review confirm), kept beside the history
            from tunegate.core.checks.near_duplicate_poison import known_poison_findings

            poison_findings, known = known_poison_findings(batch, vectors, digests, history.dir, spec=self.spec,
                                                           threshold=self.threshold)
            findings += poison_findings
        clusters = int((sizes > 0).sum())
        history_count = history.count if history is not None else 0
        compared = n > 1 or history_count > 0
        status_reason = (f"{n} records compared within the batch"
                         + (f" and with {history_count} history records" if history_count else "")
                         if compared else f"{n} record(s) and no history: nothing to compare with")
        if not compared:
            issues.append(BatchIssue("check_skipped", "info", f"near_duplicate: {status_reason}"))
        metrics = {
            "status": "ok" if compared else "insufficient_data", "status_reason": status_reason,
            "records": n, "threshold": self.threshold, "k": self.k, "batch_index": kind,
            "candidate_pairs_verified": verifier.verified, "candidate_pairs_distinct": verifier.distinct,
            "distinct_because": dict(verifier.reasons.most_common(8)),
            "history_records": history.count if history is not None else 0,
            "history_generation": int(history.manifest.get("generation", 0)) if history is not None else None,
            "history_index": history.kind if history is not None else "none",
            "near_duplicates_of_history": int(in_history.sum()), "near_duplicates_in_batch": len(members),
            "clusters": clusters, "flooding_contributors": flooders, "template_variants": self.config.template_variants,
            # for the report: each record's closest candidate (batch or history), and where the history is
            "similarity_histogram": score_histogram(
                np.max(np.concatenate([np.where(hist_pos >= 0, hist_sim, -np.inf), np.where(nbrs >= 0, sims, -np.inf)],
                                      axis=1), axis=1, initial=-np.inf), low=0.5, high=1.0, bins=50),
            "history_dir": self.config.history_dir, "batch_id": self.config.batch_id,
            **known, **self.options(),
        }
        log.info("near_duplicate: %d of %d records are near-duplicates (%d of history, %d in %d batch clusters); "
                 "%d flooding contributors; %.1f s", int(in_history.sum()) + len(members), n, int(in_history.sum()),
                 len(members), clusters, len(flooders), time.perf_counter() - started)
        return CheckResult(self.key, findings, issues, metrics)


__all__ = [
    "DEFAULT_THRESHOLD",
    "DEFAULT_THRESHOLDS",
    "VERIFY_CHARS",
    "NearDuplicateCheck",
    "NearDuplicateConfig",
    "PairVerifier",
    "TemplateIndex",
    "binomial_tail",
    "field_difference",
    "field_words",
    "pair_difference",
]
