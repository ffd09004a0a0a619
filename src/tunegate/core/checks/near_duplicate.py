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

Clustering: the batch's k-nearest-neighbour graph keeps edges with similarity >= ``threshold``; in each
connected component, records are taken in batch order and each joins the most similar representative
already chosen whose similarity (computed exactly) is >= ``threshold`` and that verification accepts
(most similar first, at most 8 tried), else becomes a representative.
So a flagged record is always within ``threshold`` of its representative (no chaining), and a flood of
thousands of copies ends as one cluster although each record sees only ``k`` neighbours.
"""

from __future__ import annotations

import logging
import math
import re
import time
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from tunegate.core.checks._vectors import EmbeddingCheck
from tunegate.core.checks.base import BatchIssue, CanonicalBatch, CheckResult, Finding
from tunegate.exceptions import ConfigError

if TYPE_CHECKING:
    import numpy as np

    from tunegate.core.history import History

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
_MAX_VERIFIED = 8  # candidates verified per record, most similar first (bounds the work in template clusters)


class NearDuplicateCheck(EmbeddingCheck):
    """Cluster near-duplicates, keep one representative per cluster, flag the rest (and floods)."""

    name = "near_duplicate"

    def __init__(self, *, threshold: float | None = None, k: int = 10, flood_min: int = 10,
                 flood_alpha: float = 0.001, template_variants: bool = True, **options: Any) -> None:
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
        if not isinstance(template_variants, bool):
            raise ConfigError(f"near_duplicate template_variants must be true or false, got {template_variants!r}")
        self.threshold = float(threshold)
        self.k = k
        self.flood_min = flood_min
        self.flood_alpha = float(flood_alpha)
        #: Whether the same passage, question and answer under another prompt template is the same example
        #: (the default). A team that trains on template variants on purpose (P3/T0-style data) sets False.
        self.template_variants = template_variants

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
        verifier = PairVerifier(self.spec.fields, template_variants=self.template_variants)
        verifier.load_batch(batch, np.flatnonzero(needed), digests)
        hist_match = np.full(n, -1, dtype=np.int64)
        hist_best = np.zeros(n, dtype=np.float32)
        if hist_cand.any():
            assert history is not None
            issues += verifier.load_history(history, np.unique(hist_pos[hist_cand]))
            for row in np.flatnonzero(hist_cand.any(axis=1)).tolist():
                for c in np.flatnonzero(hist_cand[row]).tolist()[:_MAX_VERIFIED]:
                    if verifier.same_as_history(row, int(hist_pos[row, c])):
                        hist_match[row], hist_best[row] = hist_pos[row, c], hist_sim[row, c]
                        break
        in_history = hist_match >= 0

        rep = np.full(n, -1, dtype=np.int64)
        rep_sim = np.zeros(n, dtype=np.float32)
        if n > 1:
            rep, rep_sim = self._cluster(vectors, sims, nbrs, in_history, verifier.same)

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
        flood_findings, flood_issues, flooders = self._floods(meta.column("contributor").to_pylist(), involved)
        findings += flood_findings
        issues += flood_issues
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
            "history_index": history.kind if history is not None else "none",
            "near_duplicates_of_history": int(in_history.sum()), "near_duplicates_in_batch": len(members),
            "clusters": clusters, "flooding_contributors": flooders, "template_variants": self.template_variants,
            **self.options(),
        }
        log.info("near_duplicate: %d of %d records are near-duplicates (%d of history, %d in %d batch clusters); "
                 "%d flooding contributors; %.1f s", int(in_history.sum()) + len(members), n, int(in_history.sum()),
                 len(members), clusters, len(flooders), time.perf_counter() - started)
        return CheckResult(self.key, findings, issues, metrics)

    def _cluster(self, vectors: np.ndarray, sims: np.ndarray, nbrs: np.ndarray, in_history: np.ndarray,
                 same: Callable[[int, int], bool]) -> tuple[np.ndarray, np.ndarray]:
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
                order = np.argsort(-s, kind="stable")[:_MAX_VERIFIED]
                match = next((int(c) for c in order.tolist() if s[c] >= t and same(i, candidates[c])), -1)
                if match >= 0:
                    rep[i], rep_sim[i] = candidates[match], s[match]
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


# ---------------------------------------------------------------------------------------------------------
# Verification: is a candidate pair the same training example said again?

_WORD = re.compile(r"\w+")
_TOKEN = re.compile(r"\w+|[^\w\s]+")
_SENTENCE_PUNCTUATION = ".,!?;'\"`#@-\u2026\u2019\u201c\u201d"
#: Answers of up to this many words must be equal word for word (after lower-casing, dropping punctuation):
#: a label, a number, a star rating, a short span.
SHORT_ANSWER_WORDS = 8
#: From this many shared words a text tolerates 5% changed words and typos of any length; below, one added
#: or dropped word from 4 shared words, typos of 4+ letters from 3 (``cat`` vs ``cats`` is another input).
_MIN_TOLERANT = 8
#: A typo (a word at character similarity >= _TYPO_RATIO) in a text of fewer than _MIN_TOLERANT shared words
#: is still a typo when the words are this long and this many words are shared (``txpayer``, ``whih``).
_MIN_TYPO_CONTEXT = 3
_MIN_TYPO_WORD = 4
#: A word replaced by another (not a typo) is an edit only in a text of this many shared words: in a short
#: sentence it makes another sentence (``A man is talking`` vs ``A man is eating``).
_MIN_SUBSTITUTION = 20
#: Closed-class English words. Adding or dropping one in a short text changes its grammar, not its wording:
#: CoLA's minimal pairs ("The more people (that) arrive, the louder it gets") are distinct examples, while an
#: added "really" or "new" is the edit a re-submission shows.
_FUNCTION_WORDS = frozenset((
    "a", "an", "the", "this", "that", "these", "those", "some", "any", "each", "every", "no", "all", "both",
    "either", "neither", "i", "me", "my", "mine", "we", "us", "our", "you", "your", "yours", "he", "him", "his",
    "she", "her", "hers", "it", "its", "they", "them", "their", "theirs", "one", "myself", "yourself", "himself",
    "herself", "itself", "ourselves", "themselves", "someone", "everyone", "anyone", "noone", "nobody", "who",
    "whom", "whose", "which", "what", "where", "when", "why", "how", "whether", "if", "than", "as", "so", "because",
    "since", "while", "although", "though", "and", "or", "nor", "but", "not", "to", "of", "in", "on", "at", "by",
    "for", "with", "from", "about", "into", "onto", "over", "under", "up", "down", "out", "off", "upon", "is",
    "are", "was", "were", "be", "been", "being", "am", "do", "does", "did", "have", "has", "had", "can", "could",
    "will", "would", "shall", "should", "may", "might", "must", "there", "here", "then", "t", "s", "d", "ll", "re",
    "ve", "m"
))
#: Share of the shared words that may be substituted, added or dropped (at least one from _MIN_TOLERANT on).
_CHANGED_SHARE = 0.05
#: A run of this many changed words on one side is new content (a question, a sentence), never an edit.
_NEW_CONTENT_RUN = 3
#: Changes only at the start or end of a field (a prompt template's wrapper) are tolerated around a shared
#: core of at least this many words that is at least as long as the changes.
_WRAPPER_CORE = 20
#: Text before or after the shared passage is a template's wrapper when 80% of its trigrams occur in this
#: many of the records read for verification (a record's own text occurs in it and its copies only).
TEMPLATE_MIN_RECORDS = 5
_TEMPLATE_SHARE = 0.8
_ANCHOR_WORDS = 5  # a shared run this long anchors the core (shorter ones are template words by chance)
_MOVED_RUN = 5  # a run of this many words dropped in one place and added unchanged elsewhere moved
_TYPO_RATIO = 0.75  # character similarity of a changed run that makes it a typo, not another word


#: Characters of each field that verification reads: far more than the embedding's ``max_chars``, so that a
#: question after a long passage is seen (two questions about one article differ after 2,000 characters).
VERIFY_CHARS = 20_000
#: Last token of the words of a field longer than ``max_chars``: what follows the cut is not compared.
CUT = "\x00cut"


def field_words(text: str | None, max_chars: int) -> tuple[str, ...]:
    """Lower-cased words of a field: case, spacing and sentence punctuation are not what makes an example.

    In a short field (fewer than 8 words) symbols count too (``;)`` vs ``:-(``, ``$$$$``), except sentence
    punctuation and the ``#``/``@`` of tags (``Huh..`` is ``huh?``, ``#MAGA`` is ``MAGA!``). A field cut at
    ``max_chars`` ends with :data:`CUT`, and its last, possibly partial, word is dropped."""
    raw = text or ""
    t = raw[:max_chars].lower()
    words = _WORD.findall(t)
    if len(raw) > max_chars:
        return (*words[:-1], CUT)
    if len(words) >= _MIN_TOLERANT:
        return tuple(words)
    tokens = tuple(w for w in _TOKEN.findall(t) if w.strip(_SENTENCE_PUNCTUATION))
    rest = "".join(t.split())
    return tokens or ((rest,) if rest else ())


def field_difference(a: tuple[str, ...], b: tuple[str, ...], *, answer: bool = False,
                     is_wrapper: Callable[[tuple[str, ...], tuple[str, ...]], bool] | None = None,
                     lenient: bool = False) -> str | None:
    """Why two versions of one field are not the same text said again, or ``None`` when they are (or are
    both empty: no evidence either way; the caller requires evidence from at least one field).

    ``is_wrapper(region, core)``: whether a run of words around the shared ``core`` is template text (far
    more frequent in the batch than the core). What differs before or after a long shared passage is
    tolerated as another template's wrapper only then; otherwise it is what is asked (a question about
    the passage, a review inside a rating template). Without ``is_wrapper``, no wrapper is tolerated.

    An added or dropped function word in a text of fewer than 20 shared words is another example (CoLA's
    minimal pairs: "The more people (that) arrive, the louder it gets") unless ``lenient``: the record's
    own content is pinned by another, identical field (see :func:`pair_difference`)."""

    if a == b:
        return None
    if not a or not b:
        return "empty on one side"
    longest = max(len(a), len(b))
    ops = _opcodes(a, b)
    if answer and longest <= SHORT_ANSWER_WORDS:
        changes = [(a[i1:i2], b[j1:j2]) for tag, i1, i2, j1, j2 in ops if tag != "equal"]
        one_typo = (min(len(a), len(b)) >= 3 and len(changes) == 1
                    and not any(ch.isdigit() for w in changes[0][0] + changes[0][1] for ch in w)
                    and _is_typo(*changes[0]))
        return None if one_typo else "a different short answer"
    why = _edit_difference(a, b, ops, lenient)
    if why is None or answer:
        return why
    # Not an edit of the whole field: maybe another prompt template around the same passage and question.
    # The wrapper is what lies before the first and after the last long shared run; it may differ if the
    # core dominates and the differing text is template text (see is_wrapper).
    anchors = [k for k, (tag, i1, i2, _, _) in enumerate(ops) if tag == "equal" and i2 - i1 >= _ANCHOR_WORDS]
    if not anchors:
        return why
    first, last = ops[anchors[0]], ops[anchors[-1]]
    core_ops = ops[anchors[0]:anchors[-1] + 1]
    shared = sum(i2 - i1 for tag, i1, i2, _, _ in core_ops if tag == "equal")
    # a tail cut at VERIFY_CHARS is where the other side's wrapper pushed the cut, not a difference
    tails = () if a[-1] == CUT and b[-1] == CUT else tuple(t for t in (a[last[2]:], b[last[4]:]) if CUT not in t)
    regions = [r for r in (a[:first[1]], b[:first[3]], *tails) if r]
    if shared < _WRAPPER_CORE or sum(map(len, regions)) > shared:
        return why
    core = max((op for op in core_ops if op[0] == "equal"), key=lambda op: op[2] - op[1])
    if is_wrapper is None or not all(is_wrapper(r, a[core[1]:core[2]]) for r in regions):
        return why
    return _edit_difference(a, b, core_ops, lenient)


def _edit_difference(a: tuple[str, ...], b: tuple[str, ...], ops: Sequence[tuple[str, int, int, int, int]],
                     lenient: bool = False) -> str | None:
    """Why the opcodes ``ops`` of ``a`` against ``b`` are more than a light edit, or ``None``.

    A run of words dropped in one place and added unchanged in another (a sentence moved) is no change."""
    dropped = Counter(a[i1:i2] for tag, i1, i2, _, _ in ops if tag in ("delete", "replace") and i2 - i1 >= _MOVED_RUN)
    added = Counter(b[j1:j2] for tag, _, _, j1, j2 in ops if tag in ("insert", "replace") and j2 - j1 >= _MOVED_RUN)
    moved = dropped & added
    shared = sum(i2 - i1 for tag, i1, i2, _, _ in ops if tag == "equal") + sum(len(r) * c for r, c in moved.items())
    longest = max(ops[-1][2] - ops[0][1], ops[-1][4] - ops[0][3])
    if 2 * shared < longest:
        return "mostly different words"
    changed = 0
    number_typo = False
    swaps: set[tuple[tuple[str, ...], tuple[str, ...]]] = set()
    drops_left, adds_left = Counter(moved), Counter(moved)
    for tag, i1, i2, j1, j2 in ops:
        if tag == "equal":
            continue
        pa, pb = a[i1:i2], b[j1:j2]
        side = drops_left if not pb else adds_left if not pa else None
        if side is not None and side[pa or pb] > 0:
            side[pa or pb] -= 1
            continue
        if "".join(pa) == "".join(pb):
            continue  # a word split or joined
        if any(ch.isdigit() for w in pa + pb for ch in w):
            if (shared >= _MIN_SUBSTITUTION and len(pa) == len(pb) == 1 and _one_char_apart(pa[0], pb[0])
                    and not number_typo):
                number_typo = True
                continue  # one typo in a number inside a long text (2016 -> 206)
            return "a number differs"
        if pa and pb and _is_typo(pa, pb) and (shared >= _MIN_TOLERANT or (
                shared >= _MIN_TYPO_CONTEXT and min(len(w) for w in pa + pb) >= _MIN_TYPO_WORD)):
            continue
        if max(len(pa), len(pb)) >= _NEW_CONTENT_RUN:
            return "different content (a run of 3+ words)"
        if shared < _MIN_SUBSTITUTION and ((pa and pb) or (not lenient and _FUNCTION_WORDS.intersection(pa + pb))):
            return "a different word in a short text"
        if pa and pb:
            if (pa, pb) in swaps:
                return "the same word replaced throughout (another name or entity)"
            if swaps:
                return "two words replaced by others (another example, not an edit)"
            swaps.add((pa, pb))
        changed += max(len(pa), len(pb))
    if shared >= _MIN_TOLERANT:
        allowed = math.ceil(_CHANGED_SHARE * shared)
    else:  # a record and its copy, seen on their own, may differ by one added or dropped word
        allowed = 1 if shared >= _MIN_TYPO_CONTEXT + 1 else 0
    if changed > allowed:
        return f"{changed} of {longest} words differ"
    return None


def _opcodes(a: tuple[str, ...], b: tuple[str, ...]) -> list[tuple[str, int, int, int, int]]:
    """difflib's opcodes, with the common prefix and suffix taken off first (most pairs differ in a few
    places of long texts: the matcher then works on the middle only)."""
    from difflib import SequenceMatcher

    limit = min(len(a), len(b))
    p = 0
    while p < limit and a[p] == b[p]:
        p += 1
    q = 0
    while q < limit - p and a[-1 - q] == b[-1 - q]:
        q += 1
    middle = SequenceMatcher(None, a[p:len(a) - q], b[p:len(b) - q], autojunk=False).get_opcodes()
    ops: list[tuple[str, int, int, int, int]] = [("equal", 0, p, 0, p)] if p else []
    for tag, i1, i2, j1, j2 in middle:
        if tag == "equal" and ops and ops[-1][0] == "equal":
            last = ops.pop()
            ops.append(("equal", last[1], i2 + p, last[3], j2 + p))
        else:
            ops.append((tag, i1 + p, i2 + p, j1 + p, j2 + p))
    if q:
        if ops and ops[-1][0] == "equal":
            last = ops.pop()
            ops.append(("equal", last[1], len(a), last[3], len(b)))
        else:
            ops.append(("equal", len(a) - q, len(a), len(b) - q, len(b)))
    return ops


def _one_char_apart(x: str, y: str) -> bool:
    """One character inserted, dropped or replaced."""
    if len(x) < len(y):
        x, y = y, x
    if len(x) - len(y) > 1:
        return False
    i = next((k for k, (p, q) in enumerate(zip(x, y, strict=False)) if p != q), len(y))
    return x[i + 1:] == (y[i + 1:] if len(x) == len(y) else y[i:])


def _is_typo(pa: tuple[str, ...], pb: tuple[str, ...]) -> bool:
    from difflib import SequenceMatcher

    ja, jb = " ".join(pa), " ".join(pb)
    return len(pa) == len(pb) <= 2 and SequenceMatcher(None, ja, jb, autojunk=False).ratio() >= _TYPO_RATIO


def pair_difference(a: Sequence[tuple[str, ...]], b: Sequence[tuple[str, ...]], fields: Sequence[str],
                    templates: TemplateIndex | None = None) -> str | None:
    """Why records ``a`` and ``b`` (word tuples per field, in ``fields`` order) are distinct, or ``None``
    when they are the same example: every field non-empty on either side agrees, and at least one does.

    A field may gain or lose a function word in a short text ("the") only when the input or the output
    is identical and the record's own text (8+ words, not template text): then
    the record's content is pinned and the difference is an edit around it. A CoLA sentence differing by
    "that" shares only the task definition and a label with its neighbour, so it stays strict."""
    evidence = False
    check = None if templates is None else templates.is_wrapper
    same = [fa == fb and bool(fa) for fa, fb in zip(a, b, strict=True)]
    for k, (name, fa, fb) in enumerate(zip(fields, a, b, strict=True)):
        if fa == fb:
            evidence = evidence or bool(fa)
            continue
        anchored = templates is not None and any(  # the instruction is often the task itself: never an anchor
            same[j] and fields[j] != "instruction" and len(a[j]) >= _MIN_TOLERANT and not templates.is_common(a[j])
            for j in range(len(fields)) if j != k)
        why = field_difference(fa, fb, answer=name == "output", is_wrapper=check, lenient=anchored)
        if why is not None:
            return f"{name}: {why}"
        evidence = True
    return None if evidence else "every field is empty"


_MASK64 = (1 << 64) - 1
_GRAM_MUL = 0x100000001B3  # odd: n-gram hashes combine word hashes by multiply-add (mod 2**64)
_WORD_HASHES: dict[str, int] = {}  # crc32 per word: the same in every process (Python's str hash is salted)


def _word_hash(word: str) -> int:
    h = _WORD_HASHES.get(word)
    if h is None:
        if len(_WORD_HASHES) >= 1_000_000:
            _WORD_HASHES.clear()
        h = _WORD_HASHES[word] = zlib.crc32(word.encode("utf-8", "surrogatepass")) + 1
    return h


def _gram_hash(words: tuple[str, ...]) -> int:
    """The 64-bit hash of an n-gram, as :meth:`TemplateIndex._grams` computes it for every n-gram at once."""
    h = 0
    for w in words:
        h = (h * _GRAM_MUL + _word_hash(w)) & _MASK64
    return _finalize(h)


def _finalize(h: int) -> int:
    h ^= h >> 31
    h = (h * 0xBF58476D1CE4E5B9) & _MASK64
    return h ^ (h >> 29)


class TemplateIndex:
    """Document frequency of word 1-3-grams over the records that verification reads (all their fields;
    the first and last 400 words of a long field), in a fixed-size
    count-min sketch (two hashed tables of ``2**22`` counters: 32 MiB whatever the batch), so that a run of
    words can be told to be template text (in at least ``min_records`` records) or the record's own."""

    _BITS = 22

    def __init__(self, min_records: int = TEMPLATE_MIN_RECORDS) -> None:
        import numpy as np

        self.min_records = min_records
        self._recent: dict[tuple[str, ...], np.ndarray] = {}
        self._tables = np.zeros((2, 1 << self._BITS), dtype=np.int32)
        self._pending: list[np.ndarray] = []
        self._pending_size = 0

    #: Words indexed at each end of a field: wrappers live at the ends, and a 20,000-character passage's
    #: middle would cost time for nothing.
    _ENDS = 400

    @classmethod
    def _grams(cls, words: tuple[str, ...]) -> np.ndarray:
        """Distinct hashes of the word 1-, 2- and 3-grams (vectorized; equal to :func:`_gram_hash`)."""
        import numpy as np

        if len(words) > 2 * cls._ENDS:
            return np.union1d(cls._grams(words[:cls._ENDS]), cls._grams(words[-cls._ENDS:]))
        w = np.array([_word_hash(x) for x in words], dtype=np.uint64)
        mul = np.uint64(_GRAM_MUL)
        bi = w[:-1] * mul + w[1:]
        tri = bi[:-1] * mul + w[2:]
        h = np.concatenate((w, bi, tri))
        h ^= h >> np.uint64(31)
        h *= np.uint64(0xBF58476D1CE4E5B9)
        h ^= h >> np.uint64(29)
        return np.unique(h)

    def add(self, fields: Sequence[tuple[str, ...]]) -> None:
        import numpy as np

        parts = []
        for words in fields:
            # a task definition repeats on every record of its task: its n-grams are hashed once
            cached = self._recent.get(words) if len(words) > 50 else None
            if cached is None:
                cached = self._grams(words)
                if len(words) > 50:
                    if len(self._recent) >= 256:
                        self._recent.clear()
                    self._recent[words] = cached
            parts.append(cached)
        if parts:
            self._pending.append(np.unique(np.concatenate(parts)))  # each n-gram counts once per record
            self._pending_size += len(self._pending[-1])
        if self._pending_size > 4_000_000:
            self._flush()

    def _flush(self) -> None:
        import numpy as np

        if not self._pending:  # the common case once verification runs: one check, no work
            return
        h = np.concatenate(self._pending)
        mask = np.uint64((1 << self._BITS) - 1)
        np.add.at(self._tables[0], (h & mask).astype(np.int64), 1)
        np.add.at(self._tables[1], ((h >> np.uint64(32)) & mask).astype(np.int64), 1)
        self._pending = []
        self._pending_size = 0

    def frequency(self, words: tuple[str, ...]) -> int:
        self._flush()
        h = _gram_hash(words)
        mask = (1 << self._BITS) - 1
        return int(min(self._tables[0][h & mask], self._tables[1][(h >> 32) & mask]))

    def is_common(self, words: tuple[str, ...]) -> bool:
        """Whether a field's text is template text: most of its trigrams (the whole text when shorter) occur
        in at least ``min_records`` records (a task definition, a label), not the record's own."""
        n = min(3, len(words))
        step = max(1, (len(words) - n + 1) // 24)  # 24 trigrams spread over the text tell as well as all
        grams = [words[i:i + n] for i in range(0, len(words) - n + 1, step)]
        return bool(grams) and sum(self.frequency(g) >= self.min_records for g in grams) >= _TEMPLATE_SHARE * len(grams)

    def is_wrapper(self, region: tuple[str, ...], core: tuple[str, ...]) -> bool:
        """Whether most of the region's trigrams (the whole region when shorter) occur in at least
        ``min_records`` records and in twice as many records as the core's typical trigram: a template
        is used across many examples, while a question about a passage occurs where the passage does."""
        head = core[:200]  # indexed (see _ENDS) whatever the field's length
        core_grams = [head[i:i + 3] for i in range(0, len(head) - 2, max(1, (len(head) - 2) // 16))]
        core_freq = sorted(self.frequency(g) for g in core_grams)[len(core_grams) // 2] if core_grams else 0
        need = max(self.min_records, 2 * core_freq)
        n = min(3, len(region))
        grams = [region[i:i + n] for i in range(len(region) - n + 1)]
        return sum(self.frequency(g) >= need for g in grams) >= _TEMPLATE_SHARE * len(grams)


class PairVerifier:
    """The text of the records in candidate pairs (batch and history), and the verdict on a pair.

    Holds, for the rows in at least one candidate pair only, their words per field (each field cut at
    ``max_chars``, as the embedding is): bounded by the candidates, not the batch."""

    def __init__(self, fields: Sequence[str], max_chars: int = VERIFY_CHARS, *, template_variants: bool = True) -> None:
        self.fields = tuple(fields)
        self.template_variants = template_variants
        self.max_chars = max_chars
        self.templates = TemplateIndex()
        self._memo: dict[str, tuple[str, ...]] = {}
        self._vocab: dict[str, str] = {}
        self._rows: dict[int, tuple[tuple[str, ...], ...]] = {}
        self._digests: list[str] = []
        self._history: dict[int, tuple[tuple[str, ...], ...]] = {}
        self._history_digest: dict[int, str] = {}
        self._seen: dict[tuple[int, int], bool] = {}
        self.verified = 0
        self.distinct = 0
        self.reasons: Counter[str] = Counter()

    def _field(self, text: str | None) -> tuple[str, ...]:
        if text is None or len(text) < 200:
            return self._shared(field_words(text, self.max_chars))
        words = self._memo.get(text)  # a task definition repeats on every record of its task
        if words is None:
            if len(self._memo) >= 256:
                self._memo.clear()
            words = self._memo[text] = self._shared(field_words(text, self.max_chars))
        return words

    def _shared(self, words: tuple[str, ...]) -> tuple[str, ...]:
        """The words as one object per distinct word: the rows held cost a pointer per word, not a string."""
        vocab = self._vocab
        return tuple([vocab.setdefault(w, w) for w in words])

    def _words(self, record: dict[str, Any]) -> tuple[tuple[str, ...], ...]:
        words = tuple(self._field(record.get(f)) for f in self.fields)
        self.templates.add(words)
        return words

    def load_batch(self, batch: CanonicalBatch, rows: np.ndarray, digests: list[str]) -> None:
        import numpy as np

        self._digests = digests
        if not len(rows):
            return
        for first, chunk in batch.iter_batches(list(self.fields), batch_size=20_000):
            inside = rows[(rows >= first) & (rows < first + chunk.num_rows)]
            if not len(inside):
                continue
            records = chunk.take(np.asarray(inside - first)).to_pylist()
            for row, record in zip(inside.tolist(), records, strict=True):
                self._rows[row] = self._words(record)

    def load_history(self, history: History, positions: np.ndarray) -> list[BatchIssue]:
        """Read the text of these history records from the accepted batches the manifest lists, by
        ``content_sha256`` (the history keeps ids, not text). A batch file that is gone or no longer holds
        the record leaves its matches unverified, hence not flagged, with a warning."""
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        digests = history.column("content_sha256", positions)
        numbers = history.column("batch", positions)
        batches = history.manifest.get("batches", [])
        wanted: dict[int, dict[str, list[int]]] = {}
        for pos, digest, number in zip(positions.tolist(), digests, numbers, strict=True):
            self._history_digest[pos] = digest
            wanted.setdefault(int(number) if number is not None else -1, {}).setdefault(digest, []).append(pos)
        missing = 0
        for number, by_digest in wanted.items():
            source = batches[number].get("source") if 0 <= number < len(batches) else None
            found: set[str] = set()
            if source:
                try:
                    file = pq.ParquetFile(source)
                    for chunk in file.iter_batches(batch_size=20_000, columns=["content_sha256", *self.fields]):
                        keep = pc.is_in(chunk.column(0), value_set=pa.array(list(by_digest), pa.string()))
                        for record in chunk.filter(keep).to_pylist():
                            if record["content_sha256"] in found:
                                continue
                            found.add(record["content_sha256"])
                            words = self._words(record)
                            for pos in by_digest[record["content_sha256"]]:
                                self._history[pos] = words
                except (OSError, ValueError, KeyError, pa.ArrowException) as exc:
                    log.warning("near_duplicate: cannot read history batch %s: %s", source, exc)
            missing += sum(len(p) for d, p in by_digest.items() if d not in found)
        if not missing:
            return []
        return [BatchIssue("history_text_missing", "warning",
                           f"{missing} history records matched by similarity could not be read back from their "
                           "accepted batch files (moved or deleted): those matches are not verified, so not flagged")]

    def _verdict(self, a: tuple[tuple[str, ...], ...], b: tuple[tuple[str, ...], ...]) -> bool:
        self.verified += 1
        why = pair_difference(a, b, self.fields, self.templates if self.template_variants else None)
        if why is not None:
            self.distinct += 1
            self.reasons[why.split(": ")[0] + ": " + re.sub(r"\d+", "N", why.split(": ", 1)[-1])] += 1
        return why is None

    def same(self, i: int, j: int) -> bool:
        """Whether batch rows ``i`` and ``j`` are the same example (exact copies are, without reading)."""
        if self._digests and self._digests[i] == self._digests[j]:
            return True
        key = (min(i, j), max(i, j))
        if key not in self._seen:
            if i not in self._rows or j not in self._rows:
                return False
            self._seen[key] = self._verdict(self._rows[i], self._rows[j])
        return self._seen[key]

    def same_as_history(self, row: int, pos: int) -> bool:
        if self._digests and self._history_digest.get(pos) == self._digests[row]:
            return True
        if row not in self._rows or pos not in self._history:
            return False
        return self._verdict(self._rows[row], self._history[pos])
