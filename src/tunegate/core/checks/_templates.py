"""Template text: document frequency of word n-grams over the records verification reads (near_duplicate).

A run of words around a shared passage is a prompt template's wrapper when it occurs in many records,
far more than the passage; a question about the passage occurs only where the passage does.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

#: Text before or after the shared passage is a template's wrapper when 80% of its trigrams occur in this
#: many of the records read for verification (a record's own text occurs in it and its copies only).
TEMPLATE_MIN_RECORDS = 5
_TEMPLATE_SHARE = 0.8
_GRAM_MUL = 0x100000001B3  # odd: n-gram hashes combine word hashes by multiply-add (mod 2**64)
class _WordHashes(dict[str, int]):
    """crc32 + 1 per word, the same in every process (Python's str hash is salted); a known word is a dict
    lookup in C (``map(_WORD_HASHES.__getitem__, words)``), only a new one runs Python."""

    def __missing__(self, word: str) -> int:
        if len(self) >= 1_000_000:
            self.clear()
        h = self[word] = zlib.crc32(word.encode("utf-8", "surrogatepass")) + 1
        return h


_WORD_HASHES = _WordHashes()
_word_hash = _WORD_HASHES.__getitem__


def _finalize(h: np.ndarray) -> np.ndarray:
    """The n-gram hashes' final mix (in place, uint64): every count and lookup of the index goes through it."""
    import numpy as np

    h ^= h >> np.uint64(31)
    h *= np.uint64(0xBF58476D1CE4E5B9)
    h ^= h >> np.uint64(29)
    return h


def _slots(h: np.ndarray) -> np.ndarray:
    """An n-gram hash's two count-min slots in one integer: bits 32-53 of the hash above bits 0-21."""
    import numpy as np

    mask = np.uint64((1 << TemplateIndex._BITS) - 1)
    return ((h >> np.uint64(32)) & mask) << np.uint64(TemplateIndex._BITS) | (h & mask)


class TemplateIndex:
    """Document frequency of word 1-3-grams over the records that verification reads (all their fields;
    the first and last 400 words of a long field), in a fixed-size
    count-min sketch (two hashed tables of ``2**22`` counters: 32 MiB whatever the batch), so that a run of
    words can be told to be template text (in at least ``min_records`` records) or the record's own."""

    _BITS = 22
    #: Records counted by one sort in :meth:`add_many`: their number fits the 64 - 2 * 22 bits above the slots.
    _MAX_RECORDS = 1 << (64 - 2 * _BITS)

    def __init__(self, min_records: int = TEMPLATE_MIN_RECORDS) -> None:
        import numpy as np

        self.min_records = min_records
        self._tables = np.zeros((2, 1 << self._BITS), dtype=np.int32)
        self._pending: list[np.ndarray] = []  # n-grams' slots (:func:`_slots`), once per record
        self._pending_size = 0

    #: Words indexed at each end of a field: wrappers live at the ends, and a 20,000-character passage's
    #: middle would cost time for nothing.
    _ENDS = 400

    def add(self, fields: Sequence[tuple[str, ...]]) -> None:
        """Count one record's n-grams (its fields' words)."""
        self.add_many([fields])

    def add_many(self, records: Sequence[Sequence[tuple[str, ...]]]) -> None:
        """Count the n-grams of many records at once: each n-gram once per record, whatever field it is in.

        Equal to hashing each field's 1-, 2- and 3-grams (a long field's two ends apart) and a union per record
        (tests/core/test_templates.py has that reference; but for two n-grams of one record sharing both table
        slots, counted once: see below), computed over all the records' words as one array
        (a record at a time cost ~10 small numpy calls: 240 us a record, most of verification's reading time
        at 1M records)."""
        import itertools

        import numpy as np

        if len(records) > self._MAX_RECORDS:  # the record number takes the dedup key's top 20 bits (below)
            for start in range(0, len(records), self._MAX_RECORDS):
                self.add_many(records[start:start + self._MAX_RECORDS])
            return
        runs: list[tuple[str, ...]] = []  # word runs that n-grams do not cross: fields, or a long field's ends
        owner: list[int] = []
        for r, fields in enumerate(records):
            for words in fields:
                if len(words) > 2 * self._ENDS:
                    runs += [words[:self._ENDS], words[-self._ENDS:]]
                    owner += [r, r]
                elif words:
                    runs.append(words)
                    owner.append(r)
        if not runs:
            return
        lengths = np.fromiter(map(len, runs), dtype=np.int64, count=len(runs))
        w = np.fromiter(map(_word_hash, itertools.chain.from_iterable(runs)), dtype=np.uint64,
                        count=int(lengths.sum()))
        run = np.repeat(np.arange(len(runs)), lengths)
        mul = np.uint64(_GRAM_MUL)
        bi = w[:-1] * mul + w[1:]
        tri = bi[:-1] * mul + w[2:]
        h = _finalize(np.concatenate((w, bi[run[1:] == run[:-1]], tri[run[2:] == run[:-2]])))
        rec = np.asarray(owner, dtype=np.int64)[np.concatenate((run, run[1:][run[1:] == run[:-1]],
                                                                 run[2:][run[2:] == run[:-2]]))]
        # each n-gram once per record: one sort of a single 64-bit key, the record above the n-gram's two table
        # slots (22 bits each), instead of a two-key lexsort (7x slower). Two n-grams of one record that share
        # both slots (a chance of ~n^2 / 2^45 for a record of n n-grams) count once: a count-min cell can then
        # only be lower by one, never below the n-gram's own count.
        key = (rec.astype(np.uint64) << np.uint64(2 * self._BITS)) | _slots(h)
        key.sort()  # not np.unique: NumPy 2.4 takes a hash path for it, ~90x slower than a sort here
        key = key[np.concatenate(([True], key[1:] != key[:-1]))]
        self._pending.append(key & np.uint64((1 << 2 * self._BITS) - 1))
        self._pending_size += len(key)
        if self._pending_size > 4_000_000:
            self._flush()

    def _flush(self) -> None:
        import numpy as np

        if not self._pending:  # the common case once verification runs: one check, no work
            return
        both = np.concatenate(self._pending)
        mask = np.uint64((1 << self._BITS) - 1)
        size = 1 << self._BITS
        for table, slot in ((self._tables[0], both & mask), (self._tables[1], both >> np.uint64(self._BITS))):
            if len(slot) * 64 < size:  # a few n-grams: one pass over the table would cost more than they do
                np.add.at(table, slot.astype(np.int64), 1)
            else:  # many (a chunk of records): counting them over the table is 1.5x faster than np.add.at
                table += np.bincount(slot.astype(np.int64), minlength=size).astype(np.int32)
        self._pending = []
        self._pending_size = 0

    def _frequencies(self, words: tuple[str, ...], n: int, starts: range) -> np.ndarray:
        """Records holding each n-gram ``words[i:i + n]``, ``i`` in ``starts`` (count-min: the smaller table)."""
        import numpy as np

        self._flush()
        at = np.asarray(starts, dtype=np.int64)
        if not len(at) or n < 1:
            return np.zeros(len(at), dtype=np.int64)
        w = np.fromiter(map(_word_hash, words), dtype=np.uint64, count=len(words))
        h = np.zeros(len(at), dtype=np.uint64)
        for j in range(n):  # multiply-add of the word hashes, modulo 2**64, as add_many combines them
            h = h * np.uint64(_GRAM_MUL) + w[at + j]
        both = _slots(_finalize(h))
        mask = np.uint64((1 << self._BITS) - 1)
        out: np.ndarray = np.minimum(self._tables[0][(both & mask).astype(np.int64)],
                                     self._tables[1][(both >> np.uint64(self._BITS)).astype(np.int64)])
        return out.astype(np.int64)

    def is_common(self, words: tuple[str, ...]) -> bool:
        """Whether a field's text is template text: most of its trigrams (the whole text when shorter) occur
        in at least ``min_records`` records (a task definition, a label), not the record's own."""
        n = min(3, len(words))
        step = max(1, (len(words) - n + 1) // 24)  # 24 trigrams spread over the text tell as well as all
        freq = self._frequencies(words, n, range(0, len(words) - n + 1, step))
        return bool(len(freq)) and int((freq >= self.min_records).sum()) >= _TEMPLATE_SHARE * len(freq)

    def is_wrapper(self, region: tuple[str, ...], core: tuple[str, ...]) -> bool:
        """Whether most of the region's trigrams (the whole region when shorter) occur in at least
        ``min_records`` records and in twice as many records as the core's typical trigram: a template
        is used across many examples, while a question about a passage occurs where the passage does."""
        head = core[:200]  # indexed (see _ENDS) whatever the field's length
        core_freq = sorted(self._frequencies(head, 3, range(0, len(head) - 2, max(1, (len(head) - 2) // 16))).tolist())
        need = max(self.min_records, 2 * (core_freq[len(core_freq) // 2] if core_freq else 0))
        n = min(3, len(region))
        freq = self._frequencies(region, n, range(len(region) - n + 1))
        return int((freq >= need).sum()) >= _TEMPLATE_SHARE * len(freq)
