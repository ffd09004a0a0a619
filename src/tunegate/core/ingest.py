"""Ingest: read every input file into one canonical Parquet table plus a rejected-records file.

This is the first stage of the one-way flow ``ingest -> checks -> gate``. It writes into a *work
directory* whose layout every later stage (and every Airflow task) relies on:

    WORK/canonical.parquet   every normalized record; its 0-based position is the record's ``row``
    WORK/rejected.jsonl      input that could not be parsed or normalized, with file, line and error
    WORK/ingest.json         per-input sha256 and counts (an :class:`IngestResult`)
    WORK/findings/           written by checks (see :mod:`tunegate.core.checks`)
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunegate.core.io import Storage, atomic_write, expand_inputs, sha256_file, write_json_atomic
from tunegate.core.readers import InputOptions, Rejection, read_file, resolve_options

if TYPE_CHECKING:
    from tunegate.core.readers.pieces import InputPiece

log = logging.getLogger(__name__)

CANONICAL_FILE = "canonical.parquet"
REJECTED_FILE = "rejected.jsonl"
INGEST_FILE = "ingest.json"


@dataclass
class InputFile:
    path: str
    sha256: str
    records: int = 0
    rejected: int = 0


@dataclass
class IngestResult:
    work_dir: str
    inputs: list[InputFile] = field(default_factory=list)
    #: The :class:`InputOptions` the inputs were read with (``InputOptions.to_json``).
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def records(self) -> int:
        return sum(i.records for i in self.inputs)

    @property
    def rejected(self) -> int:
        return sum(i.rejected for i in self.inputs)

    @property
    def total(self) -> int:
        return self.records + self.rejected

    def to_json(self) -> dict[str, Any]:
        return {"work_dir": self.work_dir, "inputs": [asdict(i) for i in self.inputs], "options": self.options,
                "records": self.records, "rejected": self.rejected, "total": self.total}

    @classmethod
    def load(cls, work_dir: str | Path) -> IngestResult:
        data = json.loads((Path(work_dir) / INGEST_FILE).read_text(encoding="utf-8"))
        return cls(work_dir=data["work_dir"], inputs=[InputFile(**i) for i in data["inputs"]],
                   options=data.get("options", {}))


def derived_id(digest: str, n: int) -> str:
    """The id of the ``n``-th (1-based) record without one whose content hash is ``digest``."""
    return f"sha256:{digest[:16]}" + (f"-{n}" if n > 1 else "")


def ingest(inputs: list[str], work_dir: str | Path, *, fmt: str = "auto", options: InputOptions | None = None,
           filesystem: Any = None, storage_options: Mapping[str, Any] | None = None,
           batch_size: int = 10_000, derived_rows: list[int] | None = None) -> IngestResult:
    """Read ``inputs`` (paths, globs, directories, object-storage prefixes, ``save_to_disk`` folders or fsspec
    URLs) into ``work_dir``.

    ``options`` says how to read them (container, layout, column map); the older ``fmt`` names one of
    :data:`~tunegate.core.readers.FORMATS` instead. ``filesystem`` (an fsspec filesystem, e.g. built from an
    Airflow connection) serves the URLs of its protocols; ``storage_options`` configure fsspec for other
    URLs. Memory stays bounded by ``batch_size`` records. ``derived_rows``, when given, receives the row of
    every record whose id was derived from its content (a shard's ids are renumbered when the night's
    shards are merged: :mod:`tunegate.core.shards`). Raises :class:`~tunegate.exceptions.InputError`
    for a file that cannot be read at all, before any output is committed.
    """
    options = resolve_options(fmt, options)
    storage = Storage(filesystem=filesystem, storage_options=dict(storage_options or {}))
    return ingest_sources(expand_inputs(inputs, storage), work_dir, options=options, storage=storage,
                          batch_size=batch_size, derived_rows=derived_rows)


def ingest_sources(files: Sequence[str | InputPiece], work_dir: str | Path, *, options: InputOptions,
                   storage: Storage, batch_size: int = 10_000, derived_rows: list[int] | None = None) -> IngestResult:
    """:func:`ingest` of expanded inputs: files, or pieces of JSON Lines files (a shard's share of a large file,
    :mod:`tunegate.core.readers.pieces`); consecutive pieces of one file count as one input."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tunegate.core.progress import progress
    from tunegate.core.readers.pieces import InputPiece, read_piece
    from tunegate.core.schema import canonical_schema

    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    result = IngestResult(work_dir=str(work), options=options.to_json())
    schema = canonical_schema()
    derived_ids: dict[str, int] = {}  # content hash -> occurrences, only for records without an id
    started = time.monotonic()

    # the writers close (leaving the with) before the files are renamed into place
    with (atomic_write(work / CANONICAL_FILE) as tmp_parquet, atomic_write(work / REJECTED_FILE) as tmp_rejected,
          pq.ParquetWriter(tmp_parquet, schema, compression="zstd") as writer,
          # backslashreplace: a lone surrogate in a rejection's text must not fail the batch (readers spell
          # them out already; this is the last line of defence)
          open(tmp_rejected, "w", encoding="utf-8", errors="backslashreplace") as rejected_out,
          progress(f"ingest {len(files)} file(s)", unit="records") as tracker):
        rows: list[dict[str, Any]] = []
        written = 0  # records before the current one: its row
        for source in files:
            items: Iterator[dict[str, Any] | Rejection]
            if isinstance(source, InputPiece):
                path = source.path
                items = read_piece(source, options=options, storage=storage)
                if result.inputs and result.inputs[-1].path == path:
                    entry = result.inputs[-1]
                else:
                    entry = InputFile(path=path, sha256=source.sha256)
                    result.inputs.append(entry)
            else:
                path = source
                items = read_file(path, batch_size=batch_size, options=options, storage=storage)
                entry = InputFile(path=path, sha256=sha256_file(path, storage))
                result.inputs.append(entry)
            for item in items:
                tracker.update()
                if isinstance(item, Rejection):
                    entry.rejected += 1
                    rejected_out.write(json.dumps(item.to_json(), ensure_ascii=False) + "\n")
                    continue
                if item["id"] is None:
                    digest = item["content_sha256"]
                    n = derived_ids.get(digest, 0) + 1
                    derived_ids[digest] = n
                    item["id"] = derived_id(digest, n)
                    if derived_rows is not None:
                        derived_rows.append(written)
                entry.records += 1
                written += 1
                rows.append(item)
                if len(rows) >= batch_size:
                    writer.write_table(pa.Table.from_pylist(rows, schema=schema))
                    rows.clear()
            log.info("ingest: %s -> %d records, %d rejected", path, entry.records, entry.rejected)
        if rows:
            writer.write_table(pa.Table.from_pylist(rows, schema=schema))
    write_json_atomic(work / INGEST_FILE, result.to_json())
    log.info("ingest: %d files, %d records, %d rejected in %.1fs", len(files), result.records, result.rejected,
             time.monotonic() - started)
    return result
