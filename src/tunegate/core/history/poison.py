"""Known poison: records an engineer confirmed as poison (``tunegate review confirm``), kept beside the history.

The history proper holds what was *accepted* (tomorrow's near-duplicates); this part holds what must never be
accepted: ``HISTORY_DIR/known_poison.parquet``, the confirmed records in the canonical schema plus who confirmed
them, where and when. The near-duplicate check of a night scanned with that history compares every record with
them (:mod:`tunegate.core.checks.near_duplicate_poison`) and quarantines exact and edited copies as
``known_poison``.

The file is small (confirmed records, not a night's data), so a change rewrites it whole: read, merge by
``content_sha256`` (a record confirmed twice is kept once), write a temporary sibling, rename. Changes take the
history's writer lock, so they never interleave with :func:`tunegate.core.history.update_history`. It is not part
of a history generation: confirming poison does not move the generation, so a night being checked meanwhile is
not re-checked; it sees the confirmation on its next run.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from tunegate.core.history.writing import writer_lock
from tunegate.core.io import atomic_write
from tunegate.core.schema import CANONICAL_COLUMNS
from tunegate.exceptions import HistoryError

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger(__name__)

KNOWN_POISON = "known_poison.parquet"
#: Columns added to the canonical ones: where and by whom each record was confirmed.
CONFIRMED_COLUMNS: tuple[str, ...] = ("confirmed_batch", "confirmed_by", "confirmed_at")


def known_poison_schema() -> pa.Schema:
    import pyarrow as pa

    from tunegate.core.schema import canonical_schema

    schema = canonical_schema()
    for name in CONFIRMED_COLUMNS:
        schema = schema.append(pa.field(name, pa.string()))
    return schema


def load_known_poison(history_dir: str | Path) -> pa.Table | None:
    """The confirmed poison records of a history (``None`` when there are none)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(history_dir) / KNOWN_POISON
    if not path.is_file():
        return None
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise HistoryError(f"history {history_dir}: {KNOWN_POISON} is unreadable ({exc}); restore it from a "
                           "backup, or re-confirm the poison with `tunegate review confirm` (its audit.jsonl "
                           "lists every confirmation)") from exc
    return table if table.num_rows else None


def known_poison_digests(history_dir: str | Path) -> set[str]:
    table = load_known_poison(history_dir)
    return set() if table is None else set(table.column("content_sha256").to_pylist())


def add_known_poison(history_dir: str | Path, records: pa.Table, *, batch_id: str, by: str, at: str) -> list[str]:
    """Add canonical ``records`` to the history's known poison; returns the ``content_sha256`` of those added
    (a record whose content is already there is not added again)."""
    import pyarrow as pa

    path = Path(history_dir)
    with writer_lock(path):
        current = load_known_poison(path)
        have = set() if current is None else set(current.column("content_sha256").to_pylist())
        keep, added = [], []
        for i, digest in enumerate(records.column("content_sha256").to_pylist()):
            if digest not in have:
                have.add(digest)
                keep.append(i)
                added.append(digest)
        if not keep:
            return []
        new = records.select(list(CANONICAL_COLUMNS)).take(pa.array(keep, pa.int64()))
        for name, value in zip(CONFIRMED_COLUMNS, (batch_id, by, at), strict=True):
            new = new.append_column(name, pa.array([value] * new.num_rows, pa.string()))
        new = new.cast(known_poison_schema())
        _write(path, new if current is None else pa.concat_tables([current.cast(known_poison_schema()), new]))
        log.info("history: %d record(s) confirmed as poison added to %s (%s)", len(added), path / KNOWN_POISON,
                 batch_id)
        return added


def remove_known_poison(history_dir: str | Path, digests: Iterable[str]) -> list[str]:
    """Take records out of the known poison (a confirmation overridden by a release); returns those removed."""
    import pyarrow as pa
    import pyarrow.compute as pc

    path = Path(history_dir)
    wanted = set(digests)
    with writer_lock(path):
        current = load_known_poison(path)
        if current is None or not wanted:
            return []
        column = current.column("content_sha256")
        hit = pc.is_in(column, value_set=pa.array(sorted(wanted), pa.string()))
        removed = sorted(set(column.filter(hit).to_pylist()))
        if removed:
            _write(path, current.filter(pc.invert(hit)))
        return removed


def _write(history_dir: Path, table: pa.Table) -> None:
    import pyarrow.parquet as pq

    with atomic_write(history_dir / KNOWN_POISON) as tmp:
        pq.write_table(table, tmp, compression="zstd")
