"""Template text counts: counting many records at once equals counting each record's n-grams on its own."""

from __future__ import annotations

from typing import Any

import numpy as np

from tunegate.core.checks._edits import field_words
from tunegate.core.checks._templates import _GRAM_MUL, TemplateIndex, _word_hash

MASK64 = (1 << 64) - 1


def gram_hash(words: tuple[str, ...]) -> int:
    """The reference hash of one n-gram, in Python integers: multiply-add of the word hashes, then the mix."""
    h = 0
    for w in words:
        h = (h * _GRAM_MUL + _word_hash(w)) & MASK64
    h ^= h >> 31
    h = (h * 0xBF58476D1CE4E5B9) & MASK64
    return h ^ (h >> 29)


def field_grams(words: tuple[str, ...]) -> np.ndarray:
    """The reference: distinct hashes of a field's 1-, 2- and 3-grams; a long field's two ends apart."""
    ends = TemplateIndex._ENDS
    if len(words) > 2 * ends:
        return np.union1d(field_grams(words[:ends]), field_grams(words[-ends:]))
    grams = [words[i:i + n] for n in (1, 2, 3) for i in range(len(words) - n + 1)]
    return np.unique(np.array([gram_hash(g) for g in grams], dtype=np.uint64))


def frequency(index: TemplateIndex, words: tuple[str, ...]) -> int:
    index._flush()
    h = gram_hash(words)
    mask = (1 << index._BITS) - 1
    return int(min(index._tables[0][h & mask], index._tables[1][(h >> 32) & mask]))


def one_by_one(records: list[tuple[tuple[str, ...], ...]]) -> np.ndarray:
    """The reference: each record's distinct n-grams (per field, union), counted in the tables."""
    index = TemplateIndex()
    mask = np.uint64((1 << index._BITS) - 1)
    for fields in records:
        grams = [field_grams(words) for words in fields if words]
        if not grams:
            continue
        h = np.unique(np.concatenate(grams))
        np.add.at(index._tables[0], (h & mask).astype(np.int64), 1)
        np.add.at(index._tables[1], ((h >> np.uint64(32)) & mask).astype(np.int64), 1)
    return index._tables


def test_many_at_once_equals_one_by_one(superni_slice: list[dict[str, Any]]) -> None:
    records = [tuple(field_words(r[f], 20_000) for f in ("instruction", "input", "output")) for r in superni_slice]
    long_field = tuple(f"w{i % 997}" for i in range(2_000))  # a long field: only its ends are indexed
    records += [(long_field, (), ("a",)), ((), (), ()), (("x", "y"), ("x", "y"), ("y", "x", "y"))]
    index, chunked = TemplateIndex(), TemplateIndex()
    for start in range(0, len(records), 333):
        index.add_many(records[start:start + 333])
        chunked.add_many(records[start:start + 333])
        chunked._flush()  # a few thousand n-grams a flush: counted with np.add.at
    assert index._pending_size * 64 >= 1 << index._BITS  # all of them in one flush: counted with np.bincount
    index._flush()
    assert np.array_equal(index._tables, one_by_one(records))
    assert np.array_equal(chunked._tables, index._tables)
    assert frequency(index, ("x", "y")) == 1  # in two fields of one record: counted once
    definition = records[0][0][:3]
    assert frequency(index, definition) >= sum(r[0][:3] == definition for r in records[:-3])


def test_frequencies_at_once_equal_one_at_a_time(superni_slice: list[dict[str, Any]]) -> None:
    index = TemplateIndex()
    records = [tuple(field_words(r[f], 20_000) for f in ("instruction", "input", "output")) for r in superni_slice]
    index.add_many(records)
    for fields in records[:200]:
        for words in fields:
            for n in (1, 2, 3):
                starts = range(0, max(0, len(words) - n + 1), 2)
                expected = [frequency(index, words[i:i + n]) for i in starts]
                assert index._frequencies(words, n, starts).tolist() == expected
