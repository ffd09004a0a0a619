"""Reading the history: load a generation, verify it against its manifest, search it (checks only read)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from tunegate.core.embeddings import EmbeddingSpec
from tunegate.core.vector_index import index_kind, search
from tunegate.exceptions import ConfigError, HistoryError

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

log = logging.getLogger(__name__)
_T = TypeVar("_T")

MANIFEST = "manifest.json"
#: Extra neighbours searched when a batch's own earlier contribution is excluded from a search.
_EXCLUDE_SLACK = 16
FORMAT = 1
ID_COLUMNS: tuple[str, ...] = ("id", "content_sha256", "task", "source", "contributor")
_GENERATION_FILE = re.compile(r"^(index|ids|cells)-(\d{6,})\.(faiss|parquet)$")


def _recovery(history_dir: Path) -> str:
    return (f"recover with `tunegate history rebuild {history_dir}` (re-embeds the accepted "
            "batches its manifest lists), or move the directory away to start an empty history")


@dataclass
class History:
    """A loaded history: the index, the id map and the manifest. ``count == 0`` for a new history."""

    dir: Path
    manifest: dict[str, Any]
    index: Any = None
    ids: pa.Table | None = None
    notes: list[str] = field(default_factory=list)
    #: positions hidden from :meth:`search` (the current batch's earlier contribution, on a rerun)
    excluded: np.ndarray | None = None
    #: the trained IVF cells, empty (only the writer's light load sets it: a night's segment is built on them)
    cells: Any = None

    @property
    def count(self) -> int:
        if self.index is None:  # empty, or the writer's light load (id map and cells, no vectors)
            return int(self.manifest.get("count", 0)) if self.cells is not None else 0
        return int(self.index.ntotal)

    @property
    def spec(self) -> EmbeddingSpec | None:
        emb = self.manifest.get("embedding")
        return EmbeddingSpec.from_json(emb) if emb else None

    @property
    def kind(self) -> str:
        return "empty" if self.index is None else index_kind(self.index)

    def search(self, queries: np.ndarray, k: int, nprobe: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        import numpy as np

        from tunegate.core.vector_index import NPROBE

        if self.index is None:
            n = len(queries)
            return np.full((n, k), -np.inf, dtype=np.float32), np.full((n, k), -1, dtype=np.int64)
        if self.excluded is None or not self.excluded.any():
            return search(self.index, queries, k, nprobe or NPROBE)
        # Search a little deeper and drop the hidden positions: a record of a rerun finds its own earlier
        # copy first, and the copies of its in-batch near-duplicates after it.
        sims, pos = search(self.index, queries, k + _EXCLUDE_SLACK, nprobe or NPROBE)
        hidden = (pos >= 0) & self.excluded[np.clip(pos, 0, None)]
        sims = np.where(hidden, -np.inf, sims).astype(np.float32)
        pos = np.where(hidden, -1, pos)
        order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(sims, order, axis=1), np.take_along_axis(pos, order, axis=1)

    def batch_names(self) -> list[str]:
        return [str(b["batch_id"]) for b in self.manifest.get("batches", [])]

    def without_batch(self, batch_id: str | None) -> History:
        """This history with ``batch_id``'s contribution hidden from searches (a no-op if it is not there)."""
        import numpy as np

        names = self.batch_names()
        if batch_id is None or batch_id not in names or self.ids is None:
            return self
        number = names.index(batch_id)
        excluded = np.asarray(self.ids.column("batch").to_numpy(zero_copy_only=False) == number, dtype=bool)
        note = (f"history {self.dir}: batch {batch_id!r} is already there ({int(excluded.sum())} records): a rerun, "
                "compared against the history without them")
        log.info("%s", note)
        return dataclasses.replace(self, excluded=excluded, notes=[*self.notes, note])

    def column(self, name: str, positions: Any) -> list[Any]:
        """Values of an id-map column at history positions."""
        import pyarrow as pa

        if self.ids is None:
            return []
        return self.ids.column(name).take(pa.array(positions, pa.int64())).to_pylist()  # type: ignore[no-any-return]

    def check_spec(self, spec: EmbeddingSpec) -> None:
        """Raise :class:`ConfigError` when ``spec`` would make vectors that do not compare with the history."""
        have = self.spec
        if self.count and have is not None and have.fingerprint() != spec.fingerprint():
            raise ConfigError(f"history {self.dir} holds {have.describe()} vectors but the check is configured for "
                              f"{spec.describe()}; configure the same embedding, or rebuild the history with "
                              "`tunegate history rebuild DIR --backend ... --fields ...`")


#: The last history loaded in this process: the checks of one run read the same generation (one load).
_LOADED: dict[tuple[str, str, tuple[tuple[int, int], ...]], History] = {}


def open_history(history_dir: str | Path, *, verify: bool = True) -> History:
    """Load the history for reading. A missing or empty directory is a new, empty history.

    ``verify`` checks each file against the sha256 in the manifest (about 1 s per GB); a mismatch, a
    missing file or an unreadable index raises :class:`HistoryError` with the way to recover. A generation
    already loaded by this process, whose index files are unchanged (size and mtime), is not read again.
    """
    path = Path(history_dir)
    try:
        manifest_text = (path / MANIFEST).read_text(encoding="utf-8")
        manifest = json.loads(manifest_text)
        names = [manifest["index"]["file"], *(seg["index"] for seg in manifest.get("segments") or [])]
        stats = tuple((st.st_size, st.st_mtime_ns) for st in ((path / name).stat() for name in names))
        key = (str(path.resolve()), hashlib.sha256(manifest_text.encode()).hexdigest(), stats)
    except (OSError, ValueError, KeyError, TypeError):
        key = None  # no manifest, or not one with an index: load (and report) the usual way
    if key is not None and key in _LOADED:
        return _LOADED[key]
    history = _load_history(path, verify=verify)
    if key is not None and history.count:
        _LOADED.clear()
        _LOADED[key] = history
    return history


def _load_history(history_dir: Path, *, verify: bool) -> History:
    path = Path(history_dir)
    manifest_path = path / MANIFEST
    if not manifest_path.exists():
        leftovers = [p.name for p in path.iterdir() if _GENERATION_FILE.match(p.name)] if path.is_dir() else []
        if leftovers:
            raise HistoryError(f"history {path}: {MANIFEST} is missing but {len(leftovers)} index files are there "
                               f"({', '.join(sorted(leftovers)[:4])}); " + _recovery(path))
        return History(path, {"format": FORMAT, "generation": 0, "count": 0, "batches": []},
                       notes=[f"history {path} does not exist yet: compared within the batch only"])
    manifest = _read_manifest(path)
    if manifest["count"] == 0:
        return History(path, manifest)
    started = time.perf_counter()
    ids = _read_id_maps(path, manifest, verify=verify)
    (base, _, _), *segments = _parts(manifest)
    index = _read_file(path, manifest, base, _read_index, verify=verify)
    for seg, _, count in segments:
        part = _read_file(path, manifest, seg, _read_index, verify=verify)
        if part.ntotal != count:
            raise HistoryError(f"history {path}: segment {seg[0]} should hold {count} records but holds "
                               f"{part.ntotal}; " + _recovery(path))
        try:
            index.merge_from(part, index.ntotal)  # same cells: the lists are appended, positions follow on
        except RuntimeError as exc:
            raise HistoryError(f"history {path}: segment {seg[0]} does not fit its base index ({exc}); "
                               + _recovery(path)) from exc
    if index.ntotal != manifest["count"] or ids.num_rows != manifest["count"]:
        raise HistoryError(f"history {path}: the manifest counts {manifest['count']} records but the index holds "
                           f"{index.ntotal} and the id map {ids.num_rows}; " + _recovery(path))
    log.info("history: loaded %d records (%s, %d segment(s) after the base) from %s in %.1f s", index.ntotal,
             index_kind(index), len(segments), path, time.perf_counter() - started)
    return History(path, manifest, index, ids)


def _parts(manifest: dict[str, Any]) -> list[tuple[tuple[str, str], tuple[str, str], int | None]]:
    """The base and each segment, in position order: (index file, sha256), (id map file, sha256), and the
    records a segment holds (``None`` for the base: the manifest counts the whole history)."""
    return [((manifest["index"]["file"], manifest["index"]["sha256"]),
             (manifest["ids"]["file"], manifest["ids"]["sha256"]), None),
            *(((seg["index"], seg["index_sha256"]), (seg["ids"], seg["ids_sha256"]), int(seg["count"]))
              for seg in manifest.get("segments") or [])]


def _read_id_maps(path: Path, manifest: dict[str, Any], *, verify: bool) -> pa.Table:
    """The id maps of the base and of each segment, one table in position order (no vectors are read)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = []
    for (name, _), ids, count in _parts(manifest):
        table = _read_file(path, manifest, ids, pq.read_table, verify=verify)
        if count is not None and table.num_rows != count:
            raise HistoryError(f"history {path}: segment {name} should hold {count} records but its id map holds "
                               f"{table.num_rows}; " + _recovery(path))
        tables.append(table)
    return pa.concat_tables([t.cast(tables[0].schema) for t in tables])


def _read_index(file: Path) -> Any:
    import faiss

    return faiss.read_index(str(file))


def _read_file(path: Path, manifest: dict[str, Any], file: tuple[str, str], reader: Callable[[Path], _T], *,
               verify: bool) -> _T:
    """One file of the generation, given as (name, sha256): checked against the manifest, then read."""
    f = path / file[0]
    if not f.is_file():
        raise HistoryError(f"history {path}: {f.name} (generation {manifest['generation']}) is missing; "
                           + _recovery(path))
    if verify and _sha256(f) != file[1]:
        raise HistoryError(f"history {path}: {f.name} does not match the sha256 in {MANIFEST} (damaged or "
                           "overwritten); " + _recovery(path))
    try:
        return reader(f)
    except Exception as exc:  # faiss raises RuntimeError, pyarrow ArrowInvalid: both mean "damaged"
        raise HistoryError(f"history {path}: cannot read generation {manifest['generation']} ({exc}); "
                           + _recovery(path)) from exc


def _read_manifest(path: Path) -> dict[str, Any]:
    try:
        manifest: dict[str, Any] = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HistoryError(f"history {path}: {MANIFEST} is unreadable ({exc}); " + _recovery(path)) from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise HistoryError(f"history {path}: {MANIFEST} has format {found!r}, this tunegate reads format {FORMAT}; "
                           + _recovery(path))
    for key in ("generation", "count", "batches", "embedding"):
        if key not in manifest:
            raise HistoryError(f"history {path}: {MANIFEST} lacks {key!r}; " + _recovery(path))
    if manifest["count"] and not all(k in manifest for k in ("index", "ids")):
        raise HistoryError(f"history {path}: {MANIFEST} lists no index files; " + _recovery(path))
    return manifest


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    return h.hexdigest()


def past_nights(history_dir: str | Path, *, exclude: str | None = None) -> list[dict[str, Any]]:
    """What the gate recorded about each earlier night of the history (the manifest's ``night`` entries: counts,
    top reasons, batch statistics such as the refusal count), oldest first. ``exclude``: a batch id left out (a
    rerun does not compare a night with itself). A directory that is not a history yet: ``[]``."""
    path = Path(history_dir)
    if not (path / MANIFEST).is_file():
        return []
    return [{"batch_id": b.get("batch_id"), **b["night"]} for b in _read_manifest(path)["batches"]
            if b.get("night") and b.get("batch_id") != exclude]


def describe_history(history_dir: str | Path) -> dict[str, Any]:
    """Load and verify a history; a small summary of it (for ``tunegate history show``)."""
    h = open_history(history_dir)
    return _summary(h.manifest, embedding=h.manifest.get("embedding"), notes=h.notes,
                    batch_ids=h.batch_names())


def _summary(manifest: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"history_records": manifest.get("count", 0), "generation": manifest.get("generation", 0),
            "index": manifest.get("index", {}).get("type", "empty"), "batches": len(manifest.get("batches", [])),
            "segments": len(manifest.get("segments") or []), **extra}
