"""What the report reads from a night's outputs, in bounded memory.

One pass over ``quarantine.parquet`` (narrow columns: id, task, source, contributor, reasons, findings) keeps
only bounded aggregates: the strongest few records per reason and per suspicious phrase (min-heaps), the
near-duplicate clusters with a few copies each, and counts per task and contributor. One pass over the
accepted (or held) records reads three narrow columns. Record text is read last, for the chosen rows only,
each field cut in Arrow, so a huge record is never copied whole.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunegate.core.schema import finding_detail

#: Characters of a field read for the page (it shows fewer; the phrase window needs some room).
READ_CHARS = 2_000
TEXT_COLUMNS = ("id", "instruction", "input", "output", "task", "source", "contributor", "source_file",
                "source_line")
_META_COLUMNS = ["id", "task", "source", "contributor", "reasons", "findings"]
#: The secondary reasons of a phrase: a record that also carries one of them is stronger evidence.
_PHRASE_SECONDARY = ("label_inconsistent", "degenerate_output")
NONE = "(none)"


def group_of(task: str | None, source: str | None) -> str:
    """The task a record belongs to for the breakdown: its task, else its source (as the checks group)."""
    return task or source or NONE


@dataclass
class Cluster:
    """A kept representative and the records set aside as its copies (the strongest few kept)."""

    representative: str
    size: int = 0
    copies: list[tuple[float, int, bool]] = field(default_factory=list)  # (similarity, -row, exact copy)


@dataclass
class Breakdown:
    """Records, quarantined records and their reasons per key (task or contributor)."""

    records: Counter[str] = field(default_factory=Counter)
    quarantined: Counter[str] = field(default_factory=Counter)
    reasons: dict[str, Counter[str]] = field(default_factory=dict)

    def add_quarantined(self, key: str, reasons: list[str]) -> None:
        self.records[key] += 1
        self.quarantined[key] += 1
        self.reasons.setdefault(key, Counter()).update(reasons)


@dataclass
class QuarantineDigest:
    """Bounded aggregates of ``quarantine.parquet``; rows are positions in that file."""

    samples: dict[str, list[tuple[float, int, dict[str, Any]]]] = field(default_factory=dict)
    phrase_rows: dict[str, list[tuple[tuple[float, ...], int]]] = field(default_factory=dict)
    clusters: dict[str, Cluster] = field(default_factory=dict)
    history_copies: Counter[str] = field(default_factory=Counter)
    tasks: Breakdown = field(default_factory=Breakdown)
    contributors: Breakdown = field(default_factory=Breakdown)

    def ranked_samples(self) -> dict[str, list[tuple[float, int, dict[str, Any]]]]:
        """Per reason, the strongest records first (highest score; the earlier record on a tie)."""
        return {reason: sorted(heap, key=lambda e: (e[0], e[1]), reverse=True) for reason, heap in self.samples.items()}

    def ranked_phrase_rows(self, phrase: str) -> list[int]:
        return [-neg for _, neg in sorted(self.phrase_rows.get(phrase, []), reverse=True)]


def _push(heap: list[Any], item: Any, limit: int) -> None:
    if len(heap) < limit:
        heapq.heappush(heap, item)
    elif item > heap[0]:
        heapq.heapreplace(heap, item)


def digest_quarantine(path: Path, *, phrases: Iterable[str] = (), per_reason: int = 5, per_phrase: int = 5,
                      copies: int = 5, batch_size: int = 10_000) -> QuarantineDigest:
    """One pass over ``quarantine.parquet``: see :class:`QuarantineDigest`. ``phrases`` are the suspicious
    phrases the poison scans reported (their records are kept per phrase, strongest first)."""
    import pyarrow.parquet as pq

    digest = QuarantineDigest()
    wanted = set(phrases)
    if not path.is_file():
        return digest
    row = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_size, columns=_META_COLUMNS):
        cols = {name: batch.column(name).to_pylist() for name in _META_COLUMNS}
        for i in range(batch.num_rows):
            reasons = cols["reasons"][i] or []
            digest.tasks.add_quarantined(group_of(cols["task"][i], cols["source"][i]), reasons)
            digest.contributors.add_quarantined(cols["contributor"][i] or NONE, reasons)
            _digest_findings(digest, row, cols["findings"][i] or [], reasons, wanted,
                             per_reason=per_reason, per_phrase=per_phrase, copies=copies)
            row += 1
    return digest


def _digest_findings(digest: QuarantineDigest, row: int, findings: list[dict[str, Any]], reasons: list[str],
                     wanted: set[str], *, per_reason: int, per_phrase: int, copies: int) -> None:
    best: dict[str, dict[str, Any]] = {}
    by_phrase: dict[str, list[dict[str, Any]]] = {}
    for f in findings:
        reason, score = f["reason"], float(f["score"] if f["score"] is not None else 0.0)
        if reason in reasons and (reason not in best or score > best[reason]["score"]):
            best[reason] = {**f, "score": score}
        if reason != "near_duplicate" and not wanted:
            continue
        detail = finding_detail(f)
        phrase = detail.get("phrase")
        if isinstance(phrase, str) and phrase in wanted:
            by_phrase.setdefault(phrase, []).append({**f, "score": score})
        if reason == "near_duplicate":
            _digest_copy(digest, row, detail, score, copies)
    for reason, f in best.items():
        _push(digest.samples.setdefault(reason, []), (f["score"], -row, f), per_reason)
    for phrase, fs in by_phrase.items():
        secondary = max((f["score"] for f in fs if f["reason"] in _PHRASE_SECONDARY), default=0.0)
        strength = (float(len(fs)), secondary, max(f["score"] for f in fs))
        _push(digest.phrase_rows.setdefault(phrase, []), (strength, -row), per_phrase)


def _digest_copy(digest: QuarantineDigest, row: int, detail: dict[str, Any], score: float, copies: int) -> None:
    if detail.get("in") == "history":
        digest.history_copies[str(detail.get("history_batch") or "an earlier night")] += 1
        return
    rep = detail.get("representative")
    if rep is None:
        return
    cluster = digest.clusters.setdefault(str(rep), Cluster(str(rep)))
    cluster.size += 1
    _push(cluster.copies, (float(detail.get("similarity", score)), -row, bool(detail.get("exact_copy"))), copies)


def count_records(path: Path, breakdowns: tuple[Breakdown, Breakdown], *, find_ids: Iterable[str] = (),
                  batch_size: int = 65_536) -> dict[str, int]:
    """Add the records of the accepted (or held) file to the task and contributor breakdowns; returns the
    rows of the ids asked for (near-duplicate representatives, to show their text)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    tasks, contributors = breakdowns
    wanted = pa.array(sorted(set(find_ids)), pa.string())
    found: dict[str, int] = {}
    if not path.is_file():
        return found
    start = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_size,
                                                  columns=["id", "task", "source", "contributor"]):
        task_key = pc.coalesce(batch.column("task"), batch.column("source"), pa.scalar(NONE))
        for item in pc.value_counts(task_key).to_pylist():
            tasks.records[item["values"]] += int(item["counts"])
        contributor_key = pc.coalesce(batch.column("contributor"), pa.scalar(NONE))
        for item in pc.value_counts(contributor_key).to_pylist():
            contributors.records[item["values"]] += int(item["counts"])
        if len(wanted):
            hits = pc.indices_nonzero(pc.is_in(batch.column("id"), value_set=wanted)).to_pylist()
            ids = batch.column("id")
            for i in hits:
                found.setdefault(ids[i].as_py(), start + i)
        start += batch.num_rows
    return found


def read_rows(path: Path, rows: Iterable[int], *, chars: int = READ_CHARS) -> dict[int, dict[str, Any]]:
    """The text of the given rows (positions in the file), each string field cut to ``chars`` in Arrow.

    Only the row groups holding a wanted row are read, batch by batch."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    wanted = sorted(set(rows))
    out: dict[int, dict[str, Any]] = {}
    if not wanted or not path.is_file():
        return out
    file = pq.ParquetFile(path)
    columns = [c for c in TEXT_COLUMNS if c in file.schema_arrow.names]
    start = 0
    for group in range(file.num_row_groups):
        n = file.metadata.row_group(group).num_rows
        lo = bisect_left(wanted, start)
        if lo < len(wanted) and wanted[lo] < start + n:
            offset = start
            for batch in file.iter_batches(batch_size=8_192, row_groups=[group], columns=columns):
                m = batch.num_rows
                for r in wanted[bisect_left(wanted, offset):bisect_left(wanted, offset + m)]:
                    rec: dict[str, Any] = {}
                    for name in columns:
                        cell = batch.column(name).slice(r - offset, 1)
                        if pa.types.is_string(cell.type) or pa.types.is_large_string(cell.type):
                            cell = pc.utf8_slice_codeunits(cell, 0, chars)
                        rec[name] = cell[0].as_py()
                    out[r] = rec
                offset += m
        start += n
    return out
