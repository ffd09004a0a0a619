"""Pair verification (near_duplicate): is a candidate pair the same training example said again?

FAISS proposes candidate pairs by cosine; :class:`PairVerifier` reads the text of the records in them
(batch rows, and history records from the accepted batch files) and decides with :func:`pair_difference`.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from tunegate.core.checks._edits import _MIN_TOLERANT, VERIFY_CHARS, field_difference, field_words
from tunegate.core.checks._templates import TemplateIndex
from tunegate.core.checks.base import BatchIssue

if TYPE_CHECKING:
    import numpy as np

    from tunegate.core.checks.base import CanonicalBatch
    from tunegate.core.history import History

log = logging.getLogger(__name__)


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
        """The record's words per field (the caller counts them in :attr:`templates`, many records at once)."""
        return tuple(self._field(record.get(f)) for f in self.fields)

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
            words = [self._words(record) for record in records]
            self.templates.add_many(words)
            self._rows.update(zip(inside.tolist(), words, strict=True))

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
                        read = []
                        for record in chunk.filter(keep).to_pylist():
                            if record["content_sha256"] in found:
                                continue
                            found.add(record["content_sha256"])
                            words = self._words(record)
                            read.append(words)
                            for pos in by_digest[record["content_sha256"]]:
                                self._history[pos] = words
                        self.templates.add_many(read)
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
