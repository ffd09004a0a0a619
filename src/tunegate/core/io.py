"""File-system helpers: fsspec opening, hashing, atomic writes."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import fsspec

from tunegate.exceptions import InputError

_HASH_BLOCK = 1 << 20


def expand_inputs(inputs: list[str]) -> list[str]:
    """Expand directories and globs into a sorted, de-duplicated list of file URLs.

    A local directory expands to the data files directly inside it. A path that matches nothing is an
    :class:`InputError` naming it.
    """
    out: list[str] = []
    for spec in inputs:
        fs, _, paths = fsspec.get_fs_token_paths(spec)
        if not paths:
            raise InputError("no such file", path=spec)
        for p in paths:
            if fs.isdir(p):
                children = sorted(c for c in fs.ls(p, detail=False) if _looks_like_data(c) and fs.isfile(c))
                if not children:
                    raise InputError("directory holds no data files (.json, .jsonl, .parquet, .csv)", path=spec)
                out.extend(_unstrip(fs, c) for c in children)
            elif fs.exists(p):
                out.append(_unstrip(fs, p))
            else:
                raise InputError("no such file", path=spec)
    return list(dict.fromkeys(out))


_DATA_SUFFIXES = (".json", ".jsonl", ".ndjson", ".parquet", ".csv", ".tsv")


def _looks_like_data(path: str) -> bool:
    name = path.lower()
    for comp in (".gz", ".bz2", ".xz", ".zst"):
        name = name.removesuffix(comp)
    return name.endswith(_DATA_SUFFIXES)


def _unstrip(fs: Any, path: str) -> str:
    """Give back a URL that fsspec can reopen (local paths stay plain paths)."""
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    if protocol in ("file", "local"):
        return path
    return str(fs.unstrip_protocol(path))


@contextmanager
def open_binary(url: str, *, decompress: bool = True) -> Iterator[IO[bytes]]:
    """Open a local path or fsspec URL for reading bytes, decompressing by suffix."""
    try:
        of = fsspec.open(url, "rb", compression="infer" if decompress else None)
        with of as f:
            yield f
    except FileNotFoundError as exc:
        raise InputError("no such file", path=url) from exc
    except IsADirectoryError as exc:
        raise InputError("is a directory", path=url) from exc
    except PermissionError as exc:
        raise InputError("permission denied", path=url) from exc


def sha256_file(url: str) -> str:
    """sha256 of the file's stored bytes (compressed, as on disk), read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open_binary(url, decompress=False) as f:
        while block := f.read(_HASH_BLOCK):
            h.update(block)
    return h.hexdigest()


def atomic_path(final: Path) -> Path:
    """A temporary sibling of ``final``; rename it onto ``final`` with :func:`commit`."""
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    return Path(tmp)


def commit(tmp: Path, final: Path) -> None:
    os.replace(tmp, final)


def write_json_atomic(path: Path, obj: Any) -> None:
    tmp = atomic_path(path)
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2, sort_keys=True, ensure_ascii=False)
            f.write("\n")
        commit(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def copy_atomic(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst`` through a temporary sibling, so ``dst`` is never seen half-written."""
    import shutil

    tmp = atomic_path(dst)
    try:
        shutil.copyfile(src, tmp)
        commit(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: Path, text: str) -> None:
    tmp = atomic_path(path)
    try:
        tmp.write_text(text, encoding="utf-8")
        commit(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
