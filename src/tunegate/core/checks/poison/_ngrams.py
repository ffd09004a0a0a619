"""The binary record x word n-gram matrix of the poison scans: words as integer ids, n-grams as pairs of ids.

It equals scikit-learn's ``CountVectorizer(token_pattern=TOKEN_PATTERN, ngram_range=(1, 2), binary=True,
min_df=..., max_df=...)`` on the same texts: the same lower-cased words, the same bigrams of consecutive words
joined by one space, the same document-frequency cut, the same columns in alphabetical order. What differs is
how. CountVectorizer builds every n-gram of every record as a Python string and looks it up in a dict, one
Python step per n-gram (94 s of the trigger scan's 220 s at 1M records, bench/scale/RESULTS.md). Here the
regular expression finds the words (in C), each word becomes an integer id through one dict lookup, and
everything after is numpy over integer arrays: a bigram is the pair of its words' ids packed in 64 bits, a
bigram can only be frequent when both its words are (so rare words' bigrams are never counted), document
frequencies come from one sort, strings are built only for the n-grams that survive the cut.

Each text is tokenized once: the first pass keeps every record's word ids in order, and the bigrams, the start and
end counts and the matrix are read from them.

Memory: 4 bytes per word of the texts and 8 per distinct (record, bigram of frequent words) between the passes,
plus the matrix (8 bytes per entry) and its column indices once more while they are joined; the Python word lists
of one chunk of :data:`CHUNK_RECORDS` records at a time, and one dict entry per distinct word. Phrases
of three or more words (``ngram_max`` > 2, not a default) are left to CountVectorizer.
"""

from __future__ import annotations

import itertools
import re
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import scipy.sparse as sp

#: Records tokenized at once (their Python word lists, ~60 bytes a word, are the working memory: ~40 MB).
CHUNK_RECORDS = 5_000
_SHIFT = 31  # a bigram key is (first word's id + 1) << 31 | second word's id: never a word id


class _Words:
    """Word ids of a growing dictionary (a word's id is the order it was first seen in)."""

    def __init__(self, pattern: str) -> None:
        self.ids: defaultdict[str, int] = defaultdict(itertools.count().__next__)
        self._findall: Callable[[str], list[str]] = re.compile(pattern).findall

    def encode(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """The ids of the texts' lower-cased words, concatenated, and each word's text (its row)."""
        import numpy as np

        words = [self._findall(t.lower()) for t in texts]
        lengths = np.fromiter(map(len, words), dtype=np.int64, count=len(words))
        total = int(lengths.sum())
        ids = np.fromiter(map(self.ids.__getitem__, itertools.chain.from_iterable(words)), dtype=np.int64,
                          count=total)
        if len(self.ids) >= 1 << _SHIFT:  # pragma: no cover - two billion distinct words
            raise ValueError("more than 2^31 distinct words")
        return ids, np.repeat(np.arange(len(texts)), lengths)

    def names(self) -> list[str]:
        return list(self.ids)  # insertion order is id order


def _chunks(texts: Sequence[str], words: _Words) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """``(records, word ids, their rows)`` of each run of :data:`CHUNK_RECORDS` records."""
    for start in range(0, len(texts), CHUNK_RECORDS):
        chunk = texts[start:start + CHUNK_RECORDS]
        ids, rows = words.encode(chunk)
        yield len(chunk), ids, rows


def _distinct(rows: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each (row, key) pair once."""
    import numpy as np

    order = np.lexsort((keys, rows))
    r, k = rows[order], keys[order]
    keep = np.ones(len(order), dtype=bool)
    keep[1:] = (r[1:] != r[:-1]) | (k[1:] != k[:-1])
    return r[keep], k[keep]


def _bigrams(ids: np.ndarray, rows: np.ndarray, frequent: np.ndarray | None = None, *, wanted: bool = True
             ) -> tuple[np.ndarray, np.ndarray]:
    """Rows and keys of the bigrams of consecutive words of one record (both words frequent, when given)."""
    import numpy as np

    same = rows[1:] == rows[:-1]
    if not wanted:
        same[:] = False
    if frequent is not None:
        same &= frequent[ids[:-1]] & frequent[ids[1:]]
    at = np.flatnonzero(same)
    return rows[at], ((ids[at] + 1) << _SHIFT) | ids[at + 1]


def _block(rows: np.ndarray, cols: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One chunk's rows of the binary matrix: its column indices (int32, each (row, col) once, row-major and
    sorted within a row) and its entries per row."""
    import numpy as np

    order = np.lexsort((cols, rows))
    return cols[order].astype(np.int32), np.bincount(rows, minlength=size)


def _stack(blocks: list[tuple[np.ndarray, np.ndarray]], shape: tuple[int, int]) -> sp.csr_matrix:
    """The matrix of the chunks' blocks, in order (the blocks are emptied as they are joined)."""
    import numpy as np
    import scipy.sparse as sp

    indptr = np.zeros(shape[0] + 1, dtype=np.int64)
    if blocks:
        np.cumsum(np.concatenate([per_row for _, per_row in blocks]), out=indptr[1:])
    indices = np.empty(int(indptr[-1]), dtype=np.int32)
    at = 0
    for i, (cols, _) in enumerate(blocks):
        indices[at:at + len(cols)] = cols
        at += len(cols)
        blocks[i] = (cols[:0], blocks[i][1])
    x = sp.csr_matrix((np.ones(len(indices), dtype=np.float32), indices, indptr), shape=shape)
    x.has_sorted_indices = True
    return x


def _lookup(sorted_keys: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions of ``keys`` in ``sorted_keys`` and which of them are there."""
    import numpy as np

    if not len(sorted_keys):
        return np.zeros(len(keys), dtype=np.int64), np.zeros(len(keys), dtype=bool)
    at = np.minimum(np.searchsorted(sorted_keys, keys), len(sorted_keys) - 1)
    return at, sorted_keys[at] == keys


def _transform(texts: Sequence[str], vocabulary: Sequence[str], pattern: str, bigrams: bool
               ) -> tuple[sp.csr_matrix, np.ndarray]:
    import numpy as np

    vocab = np.asarray(list(vocabulary), dtype=object)
    words = _Words(pattern)
    # every phrase's words in one pass: a phrase of 1 word is its id, of 2 its packed pair, of 3+ (or none) never
    # an n-gram here
    ids, rows = words.encode([str(phrase) for phrase in vocab.tolist()])
    length = np.bincount(rows, minlength=len(vocab))
    first = np.zeros(len(vocab), dtype=np.int64)
    np.cumsum(length[:-1], out=first[1:])
    keys = np.full(len(vocab), -1, dtype=np.int64)
    one = np.flatnonzero(length == 1)
    keys[one] = ids[first[one]]
    if bigrams:
        two = np.flatnonzero(length == 2)
        keys[two] = ((ids[first[two]] + 1) << _SHIFT) | ids[first[two] + 1]
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    blocks = []
    for size, ids, rows in _chunks(texts, words):
        brows, bkeys = _bigrams(ids, rows, wanted=bigrams)
        r, k = _distinct(np.concatenate((rows, brows)), np.concatenate((ids, bkeys)))
        at, hit = _lookup(sorted_keys, k)
        blocks.append(_block(r[hit], order[at[hit]], size))
    return _stack(blocks, (len(texts), len(vocab))), vocab


@dataclass
class WordStats:
    """What :func:`ngram_matrix` learns about the batch's running text on the way, kept when asked for (the
    insertion test, :mod:`.insertion`, judges a phrase's neighbours by them): the word dictionary, each word's
    document frequency and how many texts start / end with it, and the document frequency of every bigram of
    frequent words held by at least 2 records (sorted keys; a bigram key is ``(id1 + 1) << 31 | id2``)."""

    words: _Words | None = None
    texts: int = 0
    word_df: np.ndarray | None = None
    starts: np.ndarray | None = None
    ends: np.ndarray | None = None
    bigram_keys: np.ndarray | None = None
    bigram_df: np.ndarray | None = None


def ngram_matrix(texts: Sequence[str], *, pattern: str, min_df: int | float, max_df: int | float = 1.0,
                 bigrams: bool = True, vocabulary: Sequence[str] | None = None, stats: WordStats | None = None
                 ) -> tuple[sp.csr_matrix, np.ndarray]:
    """Binary record x word 1-2-gram matrix (CSR, float32) and the n-gram of each column, alphabetical.

    ``pattern``: the regular expression of a word; ``bigrams``: whether word pairs are counted too.
    ``min_df``/``max_df``: document-frequency cut, an integer count or a share of the records, as
    CountVectorizer reads them; when nothing is left the matrix has no columns.
    With ``vocabulary`` its phrases are the columns, in its order, and nothing is cut.
    ``stats`` (not with ``vocabulary``): filled with the batch's word statistics (:class:`WordStats`).
    """
    import numpy as np
    import scipy.sparse as sp

    if vocabulary is not None:
        return _transform(texts, vocabulary, pattern, bigrams)
    n = len(texts)
    low = min_df if isinstance(min_df, int) else min_df * n
    high = max_df if isinstance(max_df, int) else max_df * n
    empty = sp.csr_matrix((n, 0), dtype=np.float32), np.array([], dtype=object)
    if high < low:
        return empty
    # pass 1: the words of every record, in order (4 bytes a word: pass 2 reads them instead of tokenizing the texts
    # again, which was 13% of the trigger scan at 1M records), and each word's document frequency
    words = _Words(pattern)
    chunks: list[tuple[int, np.ndarray, np.ndarray]] = []
    word_df = np.zeros(0, dtype=np.int64)
    for size, ids, rows in _chunks(texts, words):
        chunks.append((size, ids.astype(np.int32), np.bincount(rows, minlength=size).astype(np.int32)))
        _, distinct = _distinct(rows, ids)  # each record's words once, for their document frequency
        counts = np.bincount(distinct, minlength=len(words.ids))
        counts[: len(word_df)] += word_df
        word_df = counts
    frequent = word_df >= low
    # pass 2: the bigrams of frequent words, each record's once (keys and counts per record), and their frequency
    pairs: list[tuple[np.ndarray, np.ndarray]] = []
    starts = np.zeros(len(words.ids), dtype=np.int64)
    ends = np.zeros(len(words.ids), dtype=np.int64)
    if bigrams:
        for size, ids32, per_row in chunks:
            ids, rows = ids32.astype(np.int64), np.repeat(np.arange(size), per_row)
            brows, bkeys = _distinct(*_bigrams(ids, rows, frequent))
            pairs.append((np.bincount(brows, minlength=size).astype(np.int32), bkeys))
            if stats is not None and len(ids):
                edge = rows[1:] != rows[:-1]
                starts += np.bincount(ids[np.concatenate(([True], edge))], minlength=len(starts))
                ends += np.bincount(ids[np.concatenate((edge, [True]))], minlength=len(ends))
    bigram_keys = np.concatenate([k for _, k in pairs]) if pairs else np.zeros(0, dtype=np.int64)
    uniq, bigram_df = np.unique(bigram_keys, return_counts=True)
    del bigram_keys
    if stats is not None:
        attested = bigram_df >= 2  # a bigram of one record says nothing about another
        stats.words, stats.texts, stats.word_df, stats.starts, stats.ends = words, n, word_df, starts, ends
        stats.bigram_keys, stats.bigram_df = uniq[attested], bigram_df[attested]
    kept_words = np.flatnonzero(frequent & (word_df <= high))
    kept_bigrams = uniq[(bigram_df >= low) & (bigram_df <= high)]
    if not len(kept_words) and not len(kept_bigrams):
        return empty
    names = words.names()
    phrases = [names[i] for i in kept_words.tolist()]
    phrases += [f"{names[(k >> _SHIFT) - 1]} {names[k & ((1 << _SHIFT) - 1)]}" for k in kept_bigrams.tolist()]
    alphabetical = np.argsort(np.asarray(phrases, dtype=object), kind="stable")
    column = np.empty(len(phrases), dtype=np.int64)
    column[alphabetical] = np.arange(len(phrases))
    word_column = np.full(len(names), -1, dtype=np.int64)
    word_column[kept_words] = column[: len(kept_words)]
    bigram_column = column[len(kept_words):]
    blocks = []
    for i, (size, ids32, per_row) in enumerate(chunks):
        wc = word_column[ids32]
        keep = wc >= 0
        r, c = _distinct(np.repeat(np.arange(size), per_row)[keep], wc[keep])  # a word once per record
        if pairs:
            bper_row, bkeys = pairs[i]
            at, hit = _lookup(kept_bigrams, bkeys)
            brows = np.repeat(np.arange(size), bper_row)
            r, c = np.concatenate((r, brows[hit])), np.concatenate((c, bigram_column[at[hit]]))
        blocks.append(_block(r, c, size))
        chunks[i] = (size, ids32[:0], per_row[:0])  # free as we go
        if pairs:
            pairs[i] = (pairs[i][0][:0], pairs[i][1][:0])
    return _stack(blocks, (n, len(phrases))), np.asarray([phrases[i] for i in alphabetical.tolist()], dtype=object)


__all__ = ["CHUNK_RECORDS", "WordStats", "ngram_matrix"]
