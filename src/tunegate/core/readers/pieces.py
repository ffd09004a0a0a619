"""Pieces of one JSON Lines file, read by different workers and numbered as if the file were read whole.

A night's batch is often one large ``.jsonl`` file; the sharded DAG (:mod:`tunegate.core.shards`) cuts such a
file at line boundaries into :class:`InputPiece` s. A piece carries what a whole-file read would have known at
its first line: the number of that line, the file's sha256 and the layout detected from the file's head (the
first :data:`~tunegate.core.readers.layouts.DETECT_RECORDS` records). Reading the pieces in order therefore
yields the records, ``source_line`` s and rejections of :func:`~tunegate.core.readers.read_file`, exactly.

Only plain (uncompressed) JSON Lines files whose container and layout a whole read would find are cut;
everything else stays one piece (a compressed stream cannot be entered in the middle).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

from tunegate.core.io import DEFAULT_STORAGE, Storage, open_binary, strip_compression
from tunegate.core.readers.containers import _container_of, open_sniffed
from tunegate.core.readers.json_containers import iter_jsonl
from tunegate.core.readers.layouts import detect_head, normalize_items
from tunegate.core.readers.options import RECORD_FORMATS, InputOptions
from tunegate.core.readers.records import Rejection
from tunegate.exceptions import InputError

_BLOCK = 4 << 20
_JSONL_SUFFIXES = (".jsonl", ".ndjson")


@dataclass(frozen=True)
class InputPiece:
    """Lines ``[start, stop)`` (byte offsets at line starts) of the JSON Lines file ``path``."""

    path: str
    #: sha256 of the whole file (what ingest records for the file).
    sha256: str
    start: int
    stop: int
    #: 1-based number, in the file, of the piece's first line.
    first_line: int
    #: The layout detected from the file's head.
    layout: str

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> InputPiece:
        return cls(path=str(data["path"]), sha256=str(data["sha256"]), start=int(data["start"]),
                   stop=int(data["stop"]), first_line=int(data["first_line"]), layout=str(data["layout"]))


def piece_layout(url: str, options: InputOptions, storage: Storage = DEFAULT_STORAGE) -> str | None:
    """The layout to read ``url``'s pieces with, or ``None`` when the file is not cut (not a plain JSON Lines file
    by name and content, or no layout to detect: a whole read then says why)."""
    name = url.lower().rstrip("/")
    if strip_compression(url) != name or not name.endswith(_JSONL_SUFFIXES):
        return None
    if options.container not in ("auto", "jsonl") or options.layout not in ("auto", *RECORD_FORMATS):
        return None
    try:
        with open_sniffed(url, storage=storage) as (head, f):
            if _container_of(url, head, options) != "jsonl":
                return None
            if options.layout in RECORD_FORMATS:
                return options.layout
            layout, _ = detect_head(iter_jsonl(f, url), options.columns)
    except InputError:
        return None  # read whole, the file fails with the reader's own message
    return layout


def split_jsonl(url: str, pieces: int, options: InputOptions, storage: Storage = DEFAULT_STORAGE
                ) -> list[InputPiece] | None:
    """``url`` cut into at most ``pieces`` runs of lines of about equal bytes (one pass over the file: its sha256
    and the line numbers at the cuts), or ``None`` when it is not cut (:func:`piece_layout`, or ``pieces < 2``)."""
    if pieces < 2:
        return None
    layout = piece_layout(url, options, storage)
    if layout is None:
        return None
    fs, path = storage.resolve(url)
    size = int(fs.size(path) or 0)
    targets = [size * k // pieces for k in range(1, pieces)]
    digest = hashlib.sha256()
    cuts: list[tuple[int, int]] = []  # (byte offset of a line start, its 1-based line number)
    offset, newlines = 0, 0
    with open_binary(url, decompress=False, storage=storage) as f:
        while block := f.read(_BLOCK):
            digest.update(block)
            while targets and targets[0] < offset + len(block):
                at = block.find(b"\n", max(0, targets[0] - offset))
                if at < 0:
                    break  # the line goes on into the next block
                cut = offset + at + 1
                if cut < size and (not cuts or cut > cuts[-1][0]):
                    cuts.append((cut, newlines + block.count(b"\n", 0, at + 1) + 1))
                targets.pop(0)
            newlines += block.count(b"\n")
            offset += len(block)
    bounds = [(0, 1), *cuts]
    stops = [c for c, _ in cuts] + [size]
    sha = digest.hexdigest()
    return [InputPiece(path=url, sha256=sha, start=start, stop=stop, first_line=line, layout=layout)
            for (start, line), stop in zip(bounds, stops, strict=True)]


def read_piece(piece: InputPiece, *, options: InputOptions,
               storage: Storage = DEFAULT_STORAGE) -> Iterator[dict[str, Any] | Rejection]:
    """The canonical records and rejections of one piece, numbered by their lines in the whole file."""
    options = dataclasses.replace(options, container="jsonl", layout=piece.layout)
    with open_binary(piece.path, storage=storage) as f:
        f.seek(piece.start)
        items = iter_jsonl(_lines(f, piece.stop - piece.start), piece.path, first_line=piece.first_line)
        yield from normalize_items(items, piece.path, options, require_records=False)


def _lines(f: IO[bytes], limit: int) -> Iterator[bytes]:
    """The lines of ``f`` from where it stands, up to ``limit`` bytes (a piece ends at a line start)."""
    for line in f:
        if limit <= 0:
            return
        limit -= len(line)
        yield line
