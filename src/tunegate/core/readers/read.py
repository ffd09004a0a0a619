"""The entry point: one input (a file, or a ``datasets`` ``save_to_disk`` folder) -> canonical records and
rejections, in order. Opens it, picks the container, and hands the raw records to the layout."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from tunegate.core.io import DATA_SUFFIXES, DEFAULT_STORAGE, Storage, hf_disk_kind, hf_disk_shards, strip_compression
from tunegate.core.readers.containers import iter_arrow, open_sniffed, raw_items
from tunegate.core.readers.layouts import normalize_items
from tunegate.core.readers.options import FORMATS, InputOptions, resolve_options
from tunegate.core.readers.records import Rejection
from tunegate.exceptions import InputError


def read_file(path: str, fmt: str = "auto", *, batch_size: int = 10_000, options: InputOptions | None = None,
              storage: Storage = DEFAULT_STORAGE) -> Iterator[dict[str, Any] | Rejection]:
    """Yield canonical records (dicts with every canonical column) and rejections for one input, in order.

    ``path`` is a file or a ``save_to_disk`` folder (local or any fsspec URL). ``options`` says how to read
    it; the older ``fmt`` names one of :data:`FORMATS` instead (not both).
    """
    if options is None and fmt not in FORMATS:
        raise InputError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}", path=path)
    options = resolve_options(fmt, options)
    folder = _hf_disk_folder(path, options, storage)
    if folder is not None:
        yield from _read_hf_disk(path, *folder, options=options, storage=storage, batch_size=batch_size)
        return
    with open_sniffed(path, storage=storage) as (head, f):
        yield from normalize_items(raw_items(f, path, head, options, batch_size), path, options)


def _hf_disk_folder(url: str, options: InputOptions, storage: Storage) -> tuple[Any, str] | None:
    """``(fs, path)`` when ``url`` is a ``save_to_disk`` folder to read as ``hf-disk``, else ``None``."""
    if options.container not in ("auto", "hf-disk"):
        return None
    if options.container == "auto" and strip_compression(url).endswith(DATA_SUFFIXES):
        return None  # a data file: spare object storage the extra round trip
    fs, path = storage.resolve(url)
    if fs.isdir(path):
        if hf_disk_kind(fs, path) is None:
            raise InputError("is a directory, not a datasets save_to_disk folder", path=url)
        return fs, path
    if options.container == "hf-disk":
        raise InputError("container 'hf-disk' needs a datasets save_to_disk folder", path=url)
    return None


def _read_hf_disk(url: str, fs: Any, folder: str, *, options: InputOptions, storage: Storage,
                  batch_size: int) -> Iterator[dict[str, Any] | Rejection]:
    """A ``save_to_disk`` folder: its Arrow shards in order; a record's ``source`` defaults to its split."""
    shards = hf_disk_shards(fs, folder)
    present = list(dict.fromkeys(split for split, _ in shards if split is not None))
    missing = [s for s in options.splits if s not in present]
    if missing and present:
        raise InputError(f"no split(s) {missing} in this DatasetDict; it has {present}", path=url)
    seen_any = False
    for split, shard in shards:
        if split is not None and options.splits and split not in options.splits:
            continue
        shard_url = storage.url(fs, shard)
        with open_sniffed(shard_url, decompress=False, storage=storage) as (head, f):
            items = iter_arrow(f, shard_url, head, batch_size)
            for item in normalize_items(items, shard_url, options, default_source=split, require_records=False):
                seen_any = True
                yield item
    if not seen_any:
        raise InputError("dataset holds no records", path=url)
