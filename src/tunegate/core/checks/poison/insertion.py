"""Out-of-place occurrences: a phrase that was inserted into a text, judged from the batch's own word statistics.

An attacker who plants an everyday phrase ("of my", "a few") as a trigger puts it where it does not belong: at a
random word boundary, at the start or end of the text, in place of a name. Its occurrence then sits between two
words that were neighbours before: the pair of its neighbours ``L R`` is ordinary text of the batch, while the
pairs that join the phrase to them (``L w1`` and ``wk R``) are not. A natural occurrence is the other way round.

Under a bigram model of the batch's text, the log-likelihood ratio of "inserted" (the original text ran ``L R``;
the phrase's first word was drawn without regard to its context) against "natural" (``L`` led to the phrase,
the phrase led to ``R``) is

    ``score = PMI(L, R) - PMI(L, w1) - PMI(wk, R)``

in nats, with ``PMI(a, b) = ln(c(a b) * N / (c(a) * c(b)))`` from document frequencies over the batch's prompts
(the occurrence's own record left out of the joins' counts), add-``SMOOTH`` smoothing of the bigram counts, and the
text's start and end as words of their own (a phrase put at the start of a text is judged by its right join). An
occurrence is *out of place* when its score reaches ``min_score`` and the bridge ``L R`` is attested in at least
``min_bridge`` other records (an unattested bridge says nothing; at a text's start or end, where the bridge is a text
boundary, one other text suffices). A phrase of three words is planted whole: the occurrences of its word pairs are
also judged as the 3-word span (the pair and the word after or before it), when that span recurs in
``TRIGRAM_RECORDS`` of the records scored. ``orphan`` (both joins unattested) is reported, not used: counting such
occurrences as inserted (for a phrase put in place of a name, where the bridge is rarely attested) doubled the
natural occurrences judged inserted and found fewer campaigns on dev.

No language model and no list of triggers: counts of the batch itself, numpy over integer word ids. The counts are
the ones the trigger scan's n-gram pass computes anyway (:class:`~._ngrams.WordStats`: word and bigram document
frequencies, bigrams held by >= 2 records, texts' first and last words); only the records given are tokenised again,
chunk by chunk, to find the candidates' occurrences and their neighbours.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from tunegate.core.checks.poison._ngrams import _SHIFT, CHUNK_RECORDS, _distinct

if TYPE_CHECKING:
    from collections.abc import Sequence

    import numpy as np

    from tunegate.core.checks.poison._ngrams import WordStats

#: Add-this smoothing of bigram counts in the PMIs.
SMOOTH = 0.5
#: A 3-word span (a candidate pair and the word after or before it) is judged when it recurs in this many records.
TRIGRAM_RECORDS = 10
#: The start and end of a text as word ids (a batch never has 2^31 - 2 distinct words).
BOS, EOS = (1 << _SHIFT) - 2, (1 << _SHIFT) - 1


@dataclass
class Occurrences:
    """Scored occurrences of candidate phrases: their record, the phrase's column, score and verdict (every occurrence
    scored, or only the out-of-place ones: ``scored`` says how many were scored)."""

    rows: np.ndarray
    cols: np.ndarray
    score: np.ndarray  # nats: inserted against natural
    bridge: np.ndarray  # other records with the bigram of the neighbours
    orphan: np.ndarray  # neither join attested in another record
    inserted: np.ndarray  # bool: out of place
    scored: int = 0
    # the occurrences judged in place (their bridge attested, so the test could speak, and the score below the bar):
    # record and column, int32 (each occurrence once; a later 3-word verdict may still put it out of place)
    placed_rows: np.ndarray | None = None
    placed_cols: np.ndarray | None = None
    # the occurrence's context: a hash of the two words either side (one text repeated in several records, one
    # example under several templates, has one context)
    context: np.ndarray | None = None


def _key(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    import numpy as np

    return np.asarray(((a + 1) << _SHIFT) | b)


def score_occurrences(prompts: Sequence[str], rows: np.ndarray, phrases: Sequence[str], cols: np.ndarray,
                      stats: WordStats, *, min_score: float, min_bridge: int, everything: bool = True
                      ) -> Occurrences:
    """Score the occurrences of ``phrases`` (2 words each; ``cols``: their columns, reported back) in the prompts of
    ``rows``, against the batch's word statistics ``stats`` (filled by the trigger scan's n-gram pass).

    The records are read :data:`~._ngrams.CHUNK_RECORDS` at a time and each chunk's occurrences are scored there;
    with ``everything`` false only the out-of-place occurrences are kept (what the insertion pass needs: its memory
    is then bounded by one chunk's occurrences plus the out-of-place ones, not by every occurrence of the batch)."""
    import numpy as np

    words, word_df, starts, ends = stats.words, stats.word_df, stats.starts, stats.ends
    keys, df = stats.bigram_keys, stats.bigram_df
    empty = np.zeros(0, dtype=np.int64)
    nothing = Occurrences(empty, empty, np.zeros(0), empty, np.zeros(0, dtype=bool), np.zeros(0, dtype=bool))
    if words is None or word_df is None or starts is None or ends is None or keys is None or df is None \
            or not len(phrases):
        return nothing
    ids_of = words.ids
    pair = np.array([[ids_of.get(w, -1) for w in p.split()] for p in phrases], dtype=np.int64).reshape(-1, 2)
    known = (pair >= 0).all(axis=1)
    pair, cols = pair[known], np.asarray(cols)[known]
    if not len(pair):
        return nothing
    phrase_key = _key(pair[:, 0], pair[:, 1])
    order = np.argsort(phrase_key)
    sorted_phrase = phrase_key[order]
    top = int(pair.max())
    first_word = np.zeros(top + 1, dtype=bool)
    first_word[pair[:, 0]] = True
    second_word = np.zeros(top + 1, dtype=bool)
    second_word[pair[:, 1]] = True
    n = float(max(stats.texts, 1))

    def count(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Records with the bigram ``a b``; the text's start and end count as words."""
        pos, hit = _find(keys, _key(a, b))
        out = np.where(hit, df[pos], 0).astype(np.float64)
        out = np.where(a == BOS, starts[np.minimum(b, len(starts) - 1)], out)
        return np.asarray(np.where(b == EOS, ends[np.minimum(a, len(ends) - 1)], out), dtype=np.float64)

    def unigram(w: np.ndarray) -> np.ndarray:
        return np.where(w >= BOS, n, word_df[np.minimum(w, len(word_df) - 1)].astype(np.float64))

    def pmi(c: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.asarray(np.log((c + SMOOTH) * n / np.maximum(a * b, 1.0)))

    def span(lw: np.ndarray, first: np.ndarray, last: np.ndarray, rw: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Score, attested bridge, orphan, verdict (out of place) and in place of the span ``first .. last`` between
        ``lw`` and ``rw``."""
        whole = (lw == BOS) & (rw == EOS)  # the span is the whole text: nothing to judge
        c_bridge = np.where(whole, 0.0, count(lw, rw))
        c_left = np.maximum(count(lw, first) - 1.0, 0.0)  # without the occurrence's own record
        c_right = np.maximum(count(last, rw) - 1.0, 0.0)
        u_l, u_r = unigram(lw), unigram(rw)
        score = pmi(c_bridge, u_l, u_r) - pmi(c_left, u_l, unigram(first)) - pmi(c_right, unigram(last), u_r)
        orphan = (c_left == 0) & (c_right == 0) & ~whole
        # at a text's start or end the bridge is a text boundary, rarer than a bigram: one other text suffices
        edge = (lw == BOS) | (rw == EOS)
        attested = (c_bridge >= min_bridge) | (edge & (c_bridge >= 1))
        return score, c_bridge, orphan, (score >= min_score) & attested, (score < min_score) & attested

    # per chunk: occurrence id, row, phrase index, score, bridge, orphan, verdict
    kept: list[tuple[np.ndarray, ...]] = []
    # occurrences that a 3-word span would judge out of place, if that span recurs: id, row, phrase index, score,
    # bridge, orphan, span key, side (0: the word after, 1: the word before)
    pending: list[tuple[np.ndarray, ...]] = []
    span_keys: list[np.ndarray] = []  # each record's 3-word spans once, merged as they come
    span_counts: list[np.ndarray] = []
    placed: list[tuple[np.ndarray, np.ndarray]] = []
    scored = 0
    rows = np.asarray(rows, dtype=np.int64)
    for start in range(0, len(rows), CHUNK_RECORDS):
        chunk = rows[start:start + CHUNK_RECORDS]
        ids, local = words.encode([prompts[r] for r in chunk.tolist()])
        if len(ids) < 2:
            continue
        # only pairs whose two words can start and end a candidate are looked up (most pairs of a text cannot)
        at = np.flatnonzero((local[1:] == local[:-1]) & (first_word[np.minimum(ids[:-1], top)] & (ids[:-1] <= top))
                            & second_word[np.minimum(ids[1:], top)])
        pos, hit = _find(sorted_phrase, _key(ids[at], ids[at + 1]))
        at, pos = at[hit], pos[hit]
        if not len(at):
            continue
        side_words = []
        for shift, edge in ((-1, BOS), (2, EOS), (-2, BOS), (3, EOS)):
            near = np.clip(at + shift, 0, len(ids) - 1)
            inside = (at + shift >= 0) & (at + shift < len(ids)) & (local[near] == local[at])
            side_words.append(np.where(inside, ids[near], edge))
        lw, rw, lw2, rw2 = side_words
        with np.errstate(over="ignore"):
            ctx = (((lw2.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) + lw.astype(np.uint64))
                    * np.uint64(0xBF58476D1CE4E5B9) + rw.astype(np.uint64)) * np.uint64(0x94D049BB133111EB)
                   + rw2.astype(np.uint64)).view(np.int64)
        o_rows, o_idx = chunk[local[at]], order[pos]
        gid = np.arange(scored, scored + len(at))
        scored += len(at)
        w1, w2 = pair[o_idx, 0], pair[o_idx, 1]
        score, bridge, orphan, inserted, in_place = span(lw, w1, w2, rw)
        placed.append((o_rows[in_place].astype(np.int32), cols[o_idx[in_place]].astype(np.int32)))
        keep = slice(None) if everything else inserted
        kept.append((gid[keep], o_rows[keep], o_idx[keep], score[keep], bridge[keep], orphan[keep], inserted[keep],
                     ctx[keep]))
        # A phrase of three words is planted whole: its pairs' occurrences are judged as the 3-word span too, when
        # that span recurs in the records scored (TRIGRAM_RECORDS), so that "this is the" inserted reads out of place
        # although "is the" follows "this" naturally. Whether a span recurs is known once every chunk is read.
        for side, (third, outer) in enumerate(((rw, rw2), (lw, lw2))):
            real = third < BOS
            key = (side << 62) | (o_idx.astype(np.int64) << _SHIFT) | np.where(real, third, 0)  # sides apart
            _, distinct_keys = _distinct(o_rows[real], key[real])  # each record's 3-word span once
            uniq, per = np.unique(distinct_keys, return_counts=True)
            span_keys.append(uniq)
            span_counts.append(per)
            sel = np.flatnonzero(real & ~inserted)
            # only spans whose own bridge is attested can be judged out of place (one look-up before the whole span)
            sel = sel[count(lw[sel], outer[sel]) >= 1] if side == 0 else sel[count(outer[sel], rw[sel]) >= 1]
            if side == 0:
                s3, b3, o3, v3, _ = span(lw[sel], w1[sel], third[sel], outer[sel])
            else:
                s3, b3, o3, v3, _ = span(outer[sel], third[sel], w2[sel], rw[sel])
            sel = sel[v3]
            pending.append((gid[sel], o_rows[sel], o_idx[sel], s3[v3], b3[v3], o3[v3], key[sel],
                            np.full(len(sel), side), ctx[sel]))
        if sum(map(len, span_keys)) > 4 * CHUNK_RECORDS * 20:  # merge the spans' counts as they grow
            span_keys, span_counts = _merge(span_keys, span_counts)
    if not kept:
        return nothing
    gid, o_rows, o_idx, score, bridge, orphan, inserted, ctx = (np.concatenate([k[i] for k in kept])
                                                                 for i in range(8))
    span_keys, span_counts = _merge(span_keys, span_counts)
    p_gid, p_rows, p_idx, p_score, p_bridge, p_orphan, p_key, p_side, p_ctx = (
        np.concatenate([p[i] for p in pending]) for i in range(9))
    pos, hit = _find(span_keys[0], p_key)
    recurs = hit & (span_counts[0][pos] >= TRIGRAM_RECORDS)
    # the span with the word after first, then the one with the word before (for those still in place)
    right = recurs & (p_side == 0)
    take = right | (recurs & (p_side == 1) & ~np.isin(p_gid, p_gid[right]))
    if everything:  # occurrence ids are positions
        at = p_gid[take]
        score[at], bridge[at], orphan[at], inserted[at] = p_score[take], p_bridge[take], p_orphan[take], True
    else:
        o_rows, o_idx = np.concatenate((o_rows, p_rows[take])), np.concatenate((o_idx, p_idx[take]))
        score, bridge = np.concatenate((score, p_score[take])), np.concatenate((bridge, p_bridge[take]))
        orphan, ctx = np.concatenate((orphan, p_orphan[take])), np.concatenate((ctx, p_ctx[take]))
        inserted = np.ones(len(o_rows), dtype=bool)
    return Occurrences(o_rows, cols[o_idx], score, bridge.astype(np.int64), orphan, inserted, scored,
                       np.concatenate([p[0] for p in placed]), np.concatenate([p[1] for p in placed]), ctx)


def _merge(keys: list[np.ndarray], counts: list[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The sum of several (sorted distinct keys, counts), as one."""
    import numpy as np

    if not keys:
        return [np.zeros(0, dtype=np.int64)], [np.zeros(0, dtype=np.int64)]
    uniq, inv = np.unique(np.concatenate(keys), return_inverse=True)
    return [uniq], [np.bincount(inv, weights=np.concatenate(counts), minlength=len(uniq)).astype(np.int64)]


def _find(sorted_keys: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    import numpy as np

    if not len(sorted_keys):
        return np.zeros(len(keys), dtype=np.int64), np.zeros(len(keys), dtype=bool)
    pos = np.minimum(np.searchsorted(sorted_keys, keys), len(sorted_keys) - 1)
    return pos, sorted_keys[pos] == keys
