"""The default ``hashing`` backend: a count sketch of word and character n-grams, no model, no fitted state.

Word unigrams and bigrams plus character 4-grams inside space-padded words (scikit-learn's ``char_wb``),
sublinear term frequency, hashed and projected by a count sketch to a dense vector. A record's vector
depends on its own text only, so vectors computed on different nights compare, and a cached vector equals
a fresh one bit for bit. Lexical: finds edited copies, not paraphrases. Any change to what this module
computes must bump :data:`~tunegate.core.embeddings.spec.HASHING_VERSION`.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from tunegate.core.embeddings.base import Embedder, normalize_rows

if TYPE_CHECKING:
    import numpy as np

_MASK64 = (1 << 64) - 1
_POLY = 0x100000001B3  # odd, so invertible modulo 2**64: substring hashes are position independent
_POLY_INV = pow(_POLY, -1, 1 << 64)
_WORD_SEP, _REC_SEP = 0, 1  # code points that never occur in normalized text
_CHAR_NGRAMS = (4,)  # 3-5-grams measured no better on the corpora, at 1.7x the cost
_CHUNK_CHARS = 4_000_000  # bounds the working memory: ~60 bytes per character of a chunk


def _mix(x: np.ndarray, seed: int) -> np.ndarray:
    """splitmix64 finalizer: a strong, version-independent 64-bit hash (numpy wraps uint64 on overflow)."""
    import numpy as np

    x = x.astype(np.uint64) ^ np.uint64((seed * 0x9E3779B97F4A7C15) & _MASK64)
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


@functools.cache
def _is_word_char() -> np.ndarray:
    """``\\w`` for every code point of the Basic Multilingual Plane (the caller counts the others as word)."""
    import numpy as np

    return np.array([chr(i).isalnum() or i == 0x5F for i in range(0x10000)], dtype=bool)


class HashingEmbedder(Embedder):
    """Count-sketch of the sublinear-TF word and character n-gram vector of each field.

    For each field, two channels (words: unigrams + bigrams; characters: 4-grams of space-padded words)
    are normalized and weighted 1/2 each; each n-gram is hashed with a 64-bit polynomial hash and mapped
    to one of ``dim`` buckets with a random sign. Fields share the ``dim`` buckets (independent hashes per
    field), which keeps the dimension at ``dim`` whatever the number of fields; the count sketch keeps
    inner products unbiased, with an error of about ``(1 - cos^2) / sqrt(dim)`` (0.012 at cos 0.9, dim 256).
    """

    backend = "hashing"
    thread_safe = True  # no state; numpy releases the GIL in its sorts and arithmetic (1.7x on 2 cores)

    @property
    def dim(self) -> int:
        return self.spec.dim

    def embed(self, records: Mapping[str, Sequence[str]]) -> np.ndarray:
        import numpy as np

        fields = self.spec.fields
        n = len(records[fields[0]])
        d = self.spec.dim
        out = np.zeros((n, d), dtype=np.float64)
        field_weight = 1.0 / len(fields)
        for fi, name in enumerate(fields):
            # a field's vector depends on its text only: each distinct text is sketched once (a task's definition
            # heads every record of the task; in SuperNI-style data that is most of the characters)
            first: dict[str, int] = {}
            inverse = np.fromiter((first.setdefault(t or "", len(first)) for t in records[name]), dtype=np.int64,
                                  count=n)
            texts = list(first)
            m = len(texts)
            whole = m == n  # all distinct (then in order): straight into out
            # else one array per channel, added to ``out`` after: the same sums in the same order, bit for bit
            parts = None if whole else [np.zeros((m, d), dtype=np.float64) for _ in range(2)]
            start = 0
            while start < m:
                stop, budget = start, 0
                while stop < m and (budget < _CHUNK_CHARS or stop == start):
                    budget += min(len(texts[stop]), self.spec.max_chars) * 3 + 8
                    stop += 1
                for ci, (rows, feats) in enumerate(self._features(texts[start:stop])):
                    sketch = _sketch(rows, feats, m=stop - start, d=d, seed=1 + 2 * fi + ci, weight=field_weight * 0.5)
                    if parts is None:
                        out[start:stop] += sketch
                    else:
                        parts[ci][start:stop] = sketch
                start = stop
            for part in parts or ():
                out += part[inverse]
        return normalize_rows(out)

    def _features(self, texts: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        """``(row, 64-bit n-gram hash)`` pairs of the word channel and the character channel."""
        import numpy as np

        limit = self.spec.max_chars
        words = [" ".join(t[:limit].replace("\x00", " ").replace("\x01", " ").lower().split()) for t in texts]
        joined = "".join(" " + w.replace(" ", f" {chr(_WORD_SEP)} ") + " " + chr(_REC_SEP) for w in words)
        c = np.frombuffer(joined.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
        length = len(c)
        powers = np.empty(length + 1, dtype=np.uint64)
        powers[0] = 1
        powers[1:] = _POLY
        powers = np.cumprod(powers, dtype=np.uint64)
        inv = np.empty(length + 1, dtype=np.uint64)
        inv[0] = 1
        inv[1:] = _POLY_INV
        inv = np.cumprod(inv, dtype=np.uint64)
        prefix = np.zeros(length + 1, dtype=np.uint64)
        np.cumsum((c + np.uint64(7)) * powers[:-1], out=prefix[1:])  # +7: no zero code in a hash
        is_sep = (c <= _REC_SEP)
        seps = np.zeros(length + 1, dtype=np.int64)
        np.cumsum(is_sep, out=seps[1:])
        rec_before = np.zeros(length + 1, dtype=np.int64)
        np.cumsum(c == _REC_SEP, out=rec_before[1:])

        def substring(a: np.ndarray, b: np.ndarray) -> np.ndarray:
            return (prefix[b] - prefix[a]) * inv[a]  # type: ignore[no-any-return]

        # characters: n-grams that contain no separator, i.e. lie inside one padded word; a padded word
        # shorter than n (" :) ", an emoji) counts as one n-gram of its own, as in scikit-learn's char_wb
        char_rows, char_feats = [], []
        sep_pos = np.flatnonzero(is_sep)
        seg_start = np.concatenate(([0], sep_pos[:-1] + 1))
        seg_len = sep_pos - seg_start
        for n in _CHAR_NGRAMS:
            if length >= n:
                a = np.arange(length - n + 1)
                a = a[seps[a + n] == seps[a]]
                char_rows.append(rec_before[a])
                char_feats.append(_mix(substring(a, a + n), 100 + n))
            short = np.flatnonzero((seg_len > 0) & (seg_len < n))
            char_rows.append(rec_before[seg_start[short]])
            char_feats.append(_mix(substring(seg_start[short], sep_pos[short]), 100 + n))
        # words: maximal runs of word characters, and pairs of consecutive words of the same record
        small = np.minimum(c, np.uint64(0xFFFF)).astype(np.int64)
        isw = _is_word_char()[small] | (c > np.uint64(0xFFFF))  # beyond the BMP: emoji, rare scripts
        prev = np.concatenate(([False], isw[:-1]))
        nxt = np.concatenate((isw[1:], [False]))
        starts = np.flatnonzero(isw & ~prev)
        ends = np.flatnonzero(isw & ~nxt) + 1
        wh = _mix(substring(starts, ends), 200)
        wrows = rec_before[starts]
        same = wrows[1:] == wrows[:-1]
        bigrams = _mix(wh[:-1][same] * np.uint64(0x9E3779B97F4A7C15) + wh[1:][same], 201)
        word = (np.concatenate((wrows, wrows[1:][same])), np.concatenate((wh, bigrams)))
        chars = (np.concatenate(char_rows) if char_rows else np.zeros(0, np.int64),
                 np.concatenate(char_feats) if char_feats else np.zeros(0, np.uint64))
        return [word, chars]


def _sketch(rows: np.ndarray, feats: np.ndarray, *, m: int, d: int, seed: int, weight: float) -> np.ndarray:
    """Sublinear-TF, L2-normalized count sketch of one channel, scaled to squared norm ``weight``."""
    import numpy as np

    # Rows arrive in ascending order; sorting (row, feature) keys counts each n-gram of a record.
    keys = (rows.astype(np.uint64) << np.uint64(40)) | (feats >> np.uint64(24))
    keys.sort()
    if len(keys):
        boundary = np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1])))
        counts = np.diff(np.append(boundary, len(keys)))
        uniq = keys[boundary]
    else:
        counts = np.zeros(0, np.int64)
        uniq = keys
    urows = (uniq >> np.uint64(40)).astype(np.int64)
    tf = 1.0 + np.log(counts)
    # a record with no n-gram in this channel (empty text) gets one fixed "empty" feature
    present = np.zeros(m, dtype=bool)
    present[urows] = True
    empty = np.flatnonzero(~present)
    if len(empty):
        urows = np.concatenate((urows, empty))
        uniq = np.concatenate((uniq, np.full(len(empty), 0xE, dtype=np.uint64)))
        tf = np.concatenate((tf, np.ones(len(empty))))
    norms = np.sqrt(np.bincount(urows, weights=tf * tf, minlength=m))
    h = _mix(uniq & np.uint64((1 << 40) - 1), seed)
    bucket = (h % np.uint64(d)).astype(np.int64)
    sign = 1.0 - 2.0 * ((h >> np.uint64(63)).astype(np.float64))
    values = sign * tf / norms[urows] * np.sqrt(weight)
    return np.bincount(urows * d + bucket, weights=values, minlength=m * d).reshape(m, d)
