"""Containers: how records are stored. Bytes in, raw records out, ``(line or row, record)`` or a
:class:`Rejection`, in order; the container is detected from the name and the first bytes.

The JSON containers live in :mod:`.json_containers`; Parquet, Arrow IPC and CSV/TSV are here. A
``save_to_disk`` folder (``hf-disk``) is a sequence of Arrow shards, read by :mod:`.read`.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tunegate.core.io import DEFAULT_STORAGE, Storage, open_binary, stream_errors, strip_compression
from tunegate.core.readers.json_containers import JsonArrayStream, iter_jsonl, iter_superni, json_error_message
from tunegate.core.readers.options import InputOptions
from tunegate.core.readers.records import RawItem, Rejection, clip
from tunegate.exceptions import InputError


def _iter_parquet(f: Any, path: str, batch_size: int) -> Iterator[RawItem]:
    """Parquet, one row group at a time: a row group with corrupt pages is rejected as one entry (naming the
    rows it held) and the row groups around it are still read."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(f)
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"not a readable Parquet file: {exc}", path=path) from exc
    position = 0
    for group in range(pf.metadata.num_row_groups):
        rows = pf.metadata.row_group(group).num_rows
        yield from _iter_rows(pf.iter_batches(batch_size=batch_size, row_groups=[group]), path, batch_size,
                              start=position, what=f"row group {group} (rows {position + 1}-{position + rows})")
        position += rows


def iter_arrow(f: Any, path: str, head: bytes, batch_size: int) -> Iterator[RawItem]:
    """Arrow IPC: the file format (``ARROW1`` magic) or the stream format that ``datasets`` writes."""
    import pyarrow as pa

    try:
        if head.startswith(b"ARROW1"):
            file_reader = pa.ipc.open_file(f)
            batches: Iterator[Any] = (file_reader.get_batch(i) for i in range(file_reader.num_record_batches))
        else:
            batches = iter(pa.ipc.open_stream(f))
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"not a readable Arrow IPC file or stream: {exc}", path=path) from exc
    yield from _iter_rows(batches, path, batch_size)


def _iter_rows(batches: Iterator[Any], path: str, batch_size: int, *, start: int = 0,
               what: str = "the file") -> Iterator[RawItem]:
    """Rows of Arrow record batches as dicts, ``batch_size`` rows converted at a time (bounded memory).

    Damage part-way through (a truncated file, a corrupt page) keeps the rows before it and rejects the rest
    of ``what`` as one entry, numbered after the last row read.
    """
    import pyarrow as pa

    errors = (pa.ArrowException, OSError, ValueError)
    position = start
    while True:
        try:
            batch = next(batches)
            # damaged offsets or invalid UTF-8 would otherwise surface in the conversion as a SystemError
            # or a crash; full validation is one pass over the batch
            batch.validate(full=True)
        except StopIteration:
            return
        except errors as exc:
            yield _unreadable_rows(path, position, what, exc)
            return
        for offset in range(0, batch.num_rows, batch_size):
            try:
                rows = batch.slice(offset, batch_size).to_pylist()
            except errors as exc:
                yield _unreadable_rows(path, position, what, exc)
                return
            for row in rows:
                position += 1
                yield position, row


def _unreadable_rows(path: str, position: int, what: str, exc: BaseException) -> Rejection:
    return Rejection(path, position + 1, "", f"unreadable data after row {position} ({type(exc).__name__}: "
                     f"{clip(str(exc))}); the rest of {what} is unreadable")


def _iter_csv(f: Any, path: str, delimiter: str) -> Iterator[RawItem]:
    csv.field_size_limit(1 << 28)
    text = io.TextIOWrapper(f, encoding="utf-8", errors="surrogateescape", newline="")
    reader = csv.reader(text, delimiter=delimiter)
    errors = stream_errors()
    header_errors: tuple[type[BaseException], ...] = (csv.Error, *errors)
    try:
        header = next(reader)
    except StopIteration:
        return
    except header_errors as exc:
        raise InputError(f"unreadable CSV header: {exc}", path=path) from exc
    header = [h.strip().lstrip("\ufeff") for h in header]
    start = reader.line_num + 1
    while True:
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield Rejection(path, start, "", f"invalid CSV: {exc}")
            start = reader.line_num + 1
            continue
        except errors as exc:
            yield Rejection(path, start, "", f"unreadable data after line {start - 1} ({type(exc).__name__}: "
                            f"{exc}); the rest of the file is unreadable")
            return
        line, start = start, reader.line_num + 1
        if not values or values == [""]:  # a blank line; a row of spaces is a short row, rejected below
            continue
        if len(values) != len(header):
            yield Rejection(path, line, clip(delimiter.join(values)),
                            f"row has {len(values)} fields, header has {len(header)}")
            continue
        row = dict(zip(header, values, strict=True))
        if "messages" in row or "conversations" in row:  # chat columns hold JSON text in CSV
            key = "messages" if "messages" in row else "conversations"
            try:
                row[key] = json.loads(row[key])
            except (ValueError, RecursionError) as exc:
                yield Rejection(path, line, clip(delimiter.join(values)),
                                f"column {key!r} is not JSON: {json_error_message(exc).removeprefix('invalid JSON: ')}")
                continue
        yield line, row


# --------------------------------------------------------------------------------------------------
# Detection and dispatch

_SNIFF = 64 * 1024
_ARROW_STREAM_MARK = b"\xff\xff\xff\xff"  # continuation marker that starts an Arrow IPC stream message
# UTF-32 LE before UTF-16 LE: its mark starts with UTF-16 LE's
_UTF16_32_BOMS = (b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff", b"\xff\xfe", b"\xfe\xff")


def _container_of(path: str, head: bytes, options: InputOptions) -> str:
    """The container to read ``path`` with: a name of :data:`CONTAINERS`, or ``json_array`` / ``superni``."""
    name = strip_compression(path)
    container = options.container
    if container == "auto":
        for suffix, kind in ((".parquet", "parquet"), (".csv", "csv"), (".tsv", "tsv"), (".arrow", "arrow")):
            if name.endswith(suffix):
                container = kind
    if container == "csv" and name.endswith(".tsv"):  # the old --format csv read .tsv files tab-separated
        return "tsv"
    if options.layout == "superni":
        return "superni"
    if container in ("parquet", "arrow"):
        return container
    if head.startswith(_UTF16_32_BOMS):
        raise InputError("text is UTF-16 or UTF-32 encoded (byte order mark); re-encode it as UTF-8", path=path)
    if container in ("csv", "tsv", "jsonl"):
        return container
    stripped = head.lstrip(b" \t\r\n\xef\xbb\xbf")
    if container == "auto" and head.startswith(b"PAR1"):
        return "parquet"
    if container == "auto" and head.startswith((b"ARROW1", _ARROW_STREAM_MARK)):
        return "arrow"
    if not stripped:
        raise InputError("file is empty", path=path)
    if container == "auto" and name.endswith((".jsonl", ".ndjson")):
        # by its name: a damaged (or non-object) first line is rejected alone, it must not cost the file
        return "jsonl"
    if stripped.startswith(b"["):
        return "json_array"
    if stripped.startswith(b"{"):
        first_line = stripped.split(b"\n", 1)[0]
        try:
            json.loads(first_line)
        except (ValueError, RecursionError):
            # Not one object per line: a pretty-printed document. The only such format we know is a
            # Super-NaturalInstructions task file; anything else is read as JSON Lines and its lines
            # are rejected one by one with their line numbers.
            if b'"Instances"' in head or b'"Definition"' in head:
                return "superni"
        return "superni" if container == "json" else "jsonl"
    raise InputError(f"unknown format (starts with {stripped[:16]!r}); pass a container (--container) "
                     f"or --format", path=path)


@contextmanager
def open_sniffed(url: str, *, decompress: bool = True,
                 storage: Storage = DEFAULT_STORAGE) -> Iterator[tuple[bytes, Any]]:
    """Open ``url`` as with :func:`~tunegate.core.io.open_binary`: ``(its first bytes, the stream)``."""
    with open_binary(url, decompress=decompress, storage=storage) as f:
        yield _peek(f)


def _peek(f: Any) -> tuple[bytes, Any]:
    head = f.peek(_SNIFF)[:_SNIFF] if hasattr(f, "peek") else b""
    if not head:
        buffered = io.BufferedReader(f, buffer_size=_SNIFF)
        head = buffered.peek(_SNIFF)[:_SNIFF]
        f = buffered
    return bytes(head), f


def raw_items(f: Any, path: str, head: bytes, options: InputOptions, batch_size: int) -> Iterator[RawItem]:
    """The raw records of one opened file (``head``: its first bytes), read with the container it holds."""
    container = _container_of(path, head, options)
    if container in ("parquet", "arrow", "csv", "tsv") and not head.strip():
        raise InputError("file is empty", path=path)
    if container == "jsonl":
        return iter_jsonl(f, path)
    if container == "json_array":
        return iter(JsonArrayStream(f, path))
    if container == "superni":
        return iter_superni(f, path)
    if container == "parquet":
        return _iter_parquet(f, path, batch_size)
    if container == "arrow":
        return iter_arrow(f, path, head, batch_size)
    return _iter_csv(f, path, "\t" if container == "tsv" else ",")
