"""File-system helpers: fsspec opening (local, object storage, the Hugging Face hub), expanding inputs (including
``datasets`` ``save_to_disk`` folders), hashing, atomic writes."""

from __future__ import annotations

import hashlib
import importlib
import json
import lzma
import os
import stat
import tempfile
import zlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import fsspec

from tunegate.exceptions import InputError

_HASH_BLOCK = 1 << 20
_GLOB_CHARS = "*?["

#: Files that mark a ``datasets.Dataset.save_to_disk`` folder (``state.json``) or a ``DatasetDict`` one.
HF_DATASET_STATE = "state.json"
HF_DATASET_DICT = "dataset_dict.json"


@dataclass(frozen=True)
class Storage:
    """How input URLs are reached.

    ``filesystem`` (an fsspec filesystem, e.g. the one an Airflow connection configures) serves the URLs of
    its own protocols; every other URL gets a filesystem from fsspec, with ``storage_options`` for
    non-local protocols. The default reaches local paths and URLs with the environment's own settings.
    """

    filesystem: Any = None
    storage_options: Mapping[str, Any] = field(default_factory=dict)

    def resolve(self, url: str) -> tuple[Any, str]:
        """``(filesystem, path)`` for ``url``; the path has no protocol."""
        protocol = url.split("://", 1)[0] if "://" in url else "file"
        if self.filesystem is not None and protocol in _protocols(self.filesystem):
            return self.filesystem, str(self.filesystem._strip_protocol(url))
        options = dict(self.storage_options) if protocol not in ("file", "local") else {}
        fs, path = fsspec.core.url_to_fs(url, **options)
        return fs, str(path)

    def url(self, fs: Any, path: str) -> str:
        """A URL that :meth:`resolve` maps back to ``(fs, path)`` (local paths stay plain paths)."""
        if _protocols(fs)[0] in ("file", "local"):
            return path
        return str(fs.unstrip_protocol(path))


DEFAULT_STORAGE = Storage()


def _protocols(fs: Any) -> tuple[str, ...]:
    return (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)


def hf_disk_kind(fs: Any, path: str) -> str | None:
    """``"dataset"`` or ``"dataset_dict"`` for a ``save_to_disk`` folder, else ``None``."""
    base = path.rstrip("/")
    if fs.isfile(f"{base}/{HF_DATASET_DICT}"):
        return "dataset_dict"
    if fs.isfile(f"{base}/{HF_DATASET_STATE}"):
        return "dataset"
    return None


def hf_disk_shards(fs: Any, path: str) -> list[tuple[str | None, str]]:
    """``(split, arrow file path)`` of a ``save_to_disk`` folder, in the order ``datasets`` reads them.

    ``split`` is ``None`` for a single ``Dataset`` folder. The order comes from ``dataset_dict.json``
    (splits) and each split's ``state.json`` (data files), not from a directory listing.
    """
    base = path.rstrip("/")
    kind = hf_disk_kind(fs, base)
    if kind is None:
        raise InputError(f"not a datasets save_to_disk folder (no {HF_DATASET_STATE} or {HF_DATASET_DICT})",
                         path=path)
    if kind == "dataset":
        return [(None, f) for f in _state_files(fs, base)]
    splits = _read_json(fs, f"{base}/{HF_DATASET_DICT}").get("splits")
    if not isinstance(splits, list) or not all(isinstance(s, str) for s in splits):
        raise InputError(f"{HF_DATASET_DICT} has no list of 'splits'", path=path)
    return [(split, f) for split in splits for f in _state_files(fs, f"{base}/{split}")]


def _state_files(fs: Any, folder: str) -> list[str]:
    state = _read_json(fs, f"{folder}/{HF_DATASET_STATE}")
    files = state.get("_data_files")
    if not isinstance(files, list) or not all(isinstance(f, dict) and isinstance(f.get("filename"), str)
                                              for f in files):
        raise InputError(f"{HF_DATASET_STATE} has no list of '_data_files'", path=folder)
    return [f"{folder}/{f['filename']}" for f in files]


def _read_json(fs: Any, path: str) -> dict[str, Any]:
    try:
        with fs.open(path, "rb") as f:
            data = json.loads(f.read().decode("utf-8"))
    except FileNotFoundError as exc:
        raise InputError("no such file", path=path) from exc
    except (ValueError, RecursionError) as exc:  # invalid UTF-8 or JSON, nested too deep, an integer too long
        raise InputError(f"not valid JSON: {exc}", path=path) from exc
    if not isinstance(data, dict):
        raise InputError("expected a JSON object", path=path)
    return data


def expand_inputs(inputs: list[str], storage: Storage = DEFAULT_STORAGE) -> list[str]:
    """Expand directories, prefixes and globs into a sorted, de-duplicated list of input URLs.

    A directory (local, or a prefix on object storage) expands to the data files directly inside it and
    to the ``save_to_disk`` folders directly inside it; a ``save_to_disk`` folder is one input (read
    through its ``state.json``). A path that matches nothing is an :class:`InputError` naming it.
    """
    out: list[str] = []
    for spec in inputs:
        fs, path = storage.resolve(spec)
        paths = sorted(fs.glob(path)) if any(c in path for c in _GLOB_CHARS) else [path]
        if not paths:
            raise InputError("no such file", path=spec)
        for p in paths:
            if fs.isdir(p):
                out.extend(storage.url(fs, c) for c in _dir_inputs(fs, p, spec))
            elif fs.exists(p):
                out.append(storage.url(fs, p))
            else:
                raise InputError("no such file", path=spec)
    return list(dict.fromkeys(out))


def _dir_inputs(fs: Any, path: str, spec: str) -> list[str]:
    if hf_disk_kind(fs, path):
        return [path.rstrip("/")]
    found: list[str] = []
    for entry in sorted(fs.ls(path, detail=True), key=lambda e: str(e["name"])):
        name = str(entry["name"]).rstrip("/")
        if entry.get("type") == "directory":
            if hf_disk_kind(fs, name):
                found.append(name)
        elif _looks_like_data(name):
            found.append(name)
    if not found:
        raise InputError("directory holds no data files (.json, .jsonl, .parquet, .csv, .tsv, .arrow) "
                         "and no datasets save_to_disk folders", path=spec)
    return found


#: Suffixes of the data files a directory expands to (after any compression suffix).
DATA_SUFFIXES = (".json", ".jsonl", ".ndjson", ".parquet", ".csv", ".tsv", ".arrow")
#: Compressions that fsspec undoes by suffix when a file is opened.
COMPRESSION_SUFFIXES = (".gz", ".bz2", ".xz", ".zst")


def strip_compression(path: str) -> str:
    """``path`` lower-cased, without a trailing ``/`` or a compression suffix: the name its format shows in."""
    name = path.lower().rstrip("/")
    for comp in COMPRESSION_SUFFIXES:
        name = name.removesuffix(comp)
    return name


def _looks_like_data(path: str) -> bool:
    return strip_compression(path).endswith(DATA_SUFFIXES)


def stream_errors() -> tuple[type[BaseException], ...]:
    """What reading a damaged stream raises: a truncated or corrupt ``.gz``/``.bz2``/``.xz``/``.zst`` file, or a
    read that fails part-way. Readers turn it into a rejection of the rest of the file."""
    errors: tuple[type[BaseException], ...] = (OSError, EOFError, zlib.error, lzma.LZMAError)
    try:  # fsspec reads .zst with zstandard when it is installed
        zstd_error: type[BaseException] = importlib.import_module("zstandard").ZstdError
    except ImportError:
        return errors
    return (*errors, zstd_error)


_SPECIAL_FILES = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
                  (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def _require_regular_file(fs: Any, path: str, url: str) -> None:
    """Refuse a local FIFO, device or socket before opening it: reading one blocks or never ends."""
    if _protocols(fs)[0] not in ("file", "local"):
        return
    mode = os.stat(path).st_mode
    if stat.S_ISDIR(mode):
        raise InputError("is a directory", path=url)
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in _SPECIAL_FILES if test(mode)), "not a regular file")
        raise InputError(f"is {kind}, not a regular file; give a data file or a directory", path=url)


@contextmanager
def open_binary(url: str, *, decompress: bool = True, storage: Storage = DEFAULT_STORAGE) -> Iterator[IO[bytes]]:
    """Open a local path or fsspec URL for reading bytes, decompressing by suffix.

    A local FIFO, device or socket is refused before it is opened; a stream that cannot be decompressed at all
    (not gzip, truncated, corrupt), or that fails while a reader has not handled it, is an :class:`InputError`.
    """
    try:
        fs, path = storage.resolve(url)
        _require_regular_file(fs, path, url)
        with fs.open(path, "rb", compression="infer" if decompress else None) as f:
            yield f
    except FileNotFoundError as exc:
        raise InputError("no such file", path=url) from exc
    except IsADirectoryError as exc:
        raise InputError("is a directory", path=url) from exc
    except PermissionError as exc:
        raise InputError("permission denied", path=url) from exc
    except stream_errors() as exc:
        raise InputError(f"unreadable data ({type(exc).__name__}: {exc})", path=url) from exc


def sha256_file(url: str, storage: Storage = DEFAULT_STORAGE) -> str:
    """sha256 of the file's stored bytes (compressed, as on disk), read in 1 MiB blocks.

    For a ``save_to_disk`` folder: of its Arrow data files' bytes, concatenated in reading order.
    """
    h = hashlib.sha256()
    fs, path = storage.resolve(url)
    files = [f for _, f in hf_disk_shards(fs, path)] if fs.isdir(path) else [path]
    for file in files:
        with open_binary(storage.url(fs, file), decompress=False, storage=storage) as f:
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


@contextmanager
def atomic_write(final: str | Path) -> Iterator[Path]:
    """Write ``final`` through a temporary sibling: ``with atomic_write(p) as tmp: write(tmp)``.

    The sibling is renamed onto ``final`` when the block ends without an exception, and removed in every
    case, so a reader sees the old file or the new one, never half of one, and a failed write leaves no
    stray temporary behind.
    """
    path = Path(final)
    tmp = atomic_path(path)
    try:
        yield tmp
        commit(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def owned_lock(lock_file: Path, *, timeout: float, busy: Callable[[str], Exception]) -> Iterator[None]:
    """An OS-level lock (``filelock``, flock) that dies with its holder, plus a sidecar ``<lock>.owner`` naming
    the holder (pid, host) while it holds it. Not had within ``timeout`` seconds: raises ``busy(holder)``,
    ``holder`` being ``"pid P on H"`` or ``"holder unknown"``."""
    import socket

    from filelock import FileLock, Timeout

    lock_file.parent.mkdir(parents=True, exist_ok=True)
    owner_file = lock_file.with_name(lock_file.name + ".owner")
    try:
        with FileLock(str(lock_file), timeout=timeout):
            write_json_atomic(owner_file, {"pid": os.getpid(), "host": socket.gethostname()})
            try:
                yield
            finally:
                owner_file.unlink(missing_ok=True)  # never name a holder that is gone
    except Timeout:
        try:
            owner = json.loads(owner_file.read_text(encoding="utf-8"))
            holder = f"pid {owner['pid']} on {owner['host']}"
        except (OSError, ValueError, KeyError, TypeError):
            holder = "holder unknown"
        raise busy(holder) from None


def write_json_atomic(path: Path, obj: Any) -> None:
    with atomic_write(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=True, ensure_ascii=False)
        f.write("\n")


def copy_atomic(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst`` through a temporary sibling, so ``dst`` is never seen half-written."""
    import shutil

    with atomic_write(dst) as tmp:
        shutil.copyfile(src, tmp)


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_write(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
