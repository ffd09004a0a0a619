"""The history: a persisted FAISS index of every record accepted so far, for cross-night checks.

The near-duplicate check compares a new batch with the history (yesterday's accepted records are today's
duplicates); the outlier check uses it as the trusted reference. Checks only *read* it. It grows only
through :func:`update_history`, which the publish step calls after the gate accepted a batch (verdict
``pass`` or ``quarantine``), so nightly cost grows with the new records, not with all data ever seen:
only the new records are embedded and added; the index is rewritten as a new generation.

Layout of ``HISTORY_DIR`` (kept next to the curated data)::

    manifest.json            the commit point: generation, embedding spec, counts, file sha256s, and
                             every accepted batch added (source path + sha256), so it can be rebuilt
    index-<generation>.faiss flat (exact) up to ``flat_max`` records, IVF-Flat above
    ids-<generation>.parquet position -> id, content_sha256, task, source, contributor, batch

An update writes the next generation's files (temp file + rename), then the manifest (temp + rename),
then deletes the previous generation: a crash at any point leaves the previous generation intact. One
writer at a time: an OS-level lock (``filelock``) that dies with its holder, so a killed update never
leaves a lock for a person to delete.

Batches are named (``batch_id``: the night's date under Airflow, the output folder's name in the CLI).
Adding a batch whose name is already there *replaces* that batch's contribution (a rerun of a night),
and the checks of a rerun compare against the history *without* their own earlier contribution, so a
rerun never finds its own records as near-duplicates of themselves. A
missing or damaged file (checked against the manifest's sha256) is a :class:`HistoryError` that says how
to recover: :func:`rebuild_history` re-embeds the accepted batches the manifest lists. Nothing is ever
treated as an empty history except a directory that does not exist or is empty.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunegate.core.embeddings import EmbeddingSpec, embed_table
from tunegate.core.io import atomic_write, write_json_atomic
from tunegate.core.vector_index import IndexParams, add, all_vectors, index_kind, new_index, search
from tunegate.exceptions import ConfigError, TunegateError

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
LOCK = ".update.lock"
#: Seconds an update waits for another writer of the same history before giving up.
LOCK_TIMEOUT = 600.0
#: Extra neighbours searched when a batch's own earlier contribution is excluded from a search.
_EXCLUDE_SLACK = 16
FORMAT = 1
ID_COLUMNS: tuple[str, ...] = ("id", "content_sha256", "task", "source", "contributor")
#: Re-train the IVF cells once the history has grown this many times since they were trained: cells
#: trained on early data fit later data worse (longer lists, lower recall).
RETRAIN_GROWTH = 4.0
_GENERATION_FILE = re.compile(r"^(index|ids)-(\d{6,})\.(faiss|parquet)$")


class HistoryError(TunegateError):
    """The history cannot be used as it is: damaged, partly missing, locked, or made another way."""


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

    @property
    def count(self) -> int:
        return 0 if self.index is None else int(self.index.ntotal)

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
_LOADED: dict[tuple[str, str, int, int], History] = {}


def open_history(history_dir: str | Path, *, verify: bool = True) -> History:
    """Load the history for reading. A missing or empty directory is a new, empty history.

    ``verify`` checks each file against the sha256 in the manifest (about 1 s per GB); a mismatch, a
    missing file or an unreadable index raises :class:`HistoryError` with the way to recover. A generation
    already loaded by this process, whose index file is unchanged (size and mtime), is not read again.
    """
    path = Path(history_dir)
    try:
        manifest_text = (path / MANIFEST).read_text(encoding="utf-8")
        index_name = json.loads(manifest_text)["index"]["file"]
        st = (path / index_name).stat()
        key = (str(path.resolve()), hashlib.sha256(manifest_text.encode()).hexdigest(), st.st_size, st.st_mtime_ns)
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
    import faiss
    import pyarrow.parquet as pq

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
    index_file = path / manifest["index"]["file"]
    ids_file = path / manifest["ids"]["file"]
    for f, key in ((index_file, "index"), (ids_file, "ids")):
        if not f.is_file():
            raise HistoryError(f"history {path}: {f.name} (generation {manifest['generation']}) is missing; "
                               + _recovery(path))
        if verify and _sha256(f) != manifest[key]["sha256"]:
            raise HistoryError(f"history {path}: {f.name} does not match the sha256 in {MANIFEST} (damaged or "
                               "overwritten); " + _recovery(path))
    try:
        index = faiss.read_index(str(index_file))
        ids = pq.read_table(ids_file)
    except Exception as exc:  # faiss raises RuntimeError, pyarrow ArrowInvalid: both mean "damaged"
        raise HistoryError(f"history {path}: cannot read generation {manifest['generation']} ({exc}); "
                           + _recovery(path)) from exc
    if index.ntotal != manifest["count"] or ids.num_rows != manifest["count"]:
        raise HistoryError(f"history {path}: the manifest counts {manifest['count']} records but the index holds "
                           f"{index.ntotal} and the id map {ids.num_rows}; " + _recovery(path))
    log.info("history: loaded %d records (%s) from %s in %.1f s", index.ntotal, index_kind(index), path,
             time.perf_counter() - started)
    return History(path, manifest, index, ids)


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


@contextlib.contextmanager
def _locked(path: Path, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
    """One writer at a time, through an OS-level lock (flock) that is released when its holder dies."""
    from filelock import FileLock, Timeout

    path.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path / LOCK), timeout=timeout)
    try:
        with lock:
            yield
    except Timeout:
        raise HistoryError(f"history {path} is being updated by another process; waited {timeout:.0f} s for it "
                           "(the lock is released when that process ends)") from None


# --------------------------------------------------------------------------------------------------
# writing


def update_history(history_dir: str | Path, accepted: str | Path, *, batch_id: str | None = None,
                   spec: EmbeddingSpec | None = None, cache_dir: str | Path | None = None,
                   params: IndexParams | None = None) -> dict[str, Any]:
    """Add the records of an accepted batch (``accepted.parquet``, canonical schema) to the history.

    Call it after the gate when the verdict is not ``halt``. Idempotent: a file already added (same
    sha256) adds nothing, and records whose ``content_sha256`` is already in the history are skipped.
    A batch whose ``batch_id`` is already in the history (a rerun of that night) *replaces* that batch's
    contribution: its earlier records are removed before the new ones are added.
    ``spec`` is only used to start a new history (default: the ``hashing`` backend over all fields);
    an existing history keeps its own, and a different ``spec`` is a :class:`ConfigError`. Pass the
    checks' ``cache_dir`` to reuse the vectors they computed. Returns a small summary.
    """
    path = Path(history_dir)
    source = Path(accepted)
    if not source.is_file():
        raise HistoryError(f"accepted batch {source} does not exist; nothing added to history {path}")
    with _locked(path):
        current = _load_history(path, verify=True)  # never the in-process copy: this one gets added to
        if current.count and spec is not None:
            current.check_spec(spec)
        use_spec = current.spec or spec or EmbeddingSpec()
        digest = _sha256(source)
        name = batch_id or source.parent.name
        if any(b["source_sha256"] == digest for b in current.manifest["batches"]):
            log.info("history: %s (sha256 %s) is already in %s; nothing added", source, digest[:12], path)
            return _summary(current.manifest, added=0, skipped=0, replaced=0, note="batch already in history")
        replaced = 0
        if name in current.batch_names():
            current, replaced = _drop_batch(current, name)
        summary = _write_next(path, current, [(source, digest, name)], spec=use_spec, cache_dir=cache_dir,
                              params=params or IndexParams())
        return {**summary, "replaced": replaced}


def _drop_batch(current: History, batch_id: str) -> tuple[History, int]:
    """``current`` without ``batch_id``'s records (in memory; the caller writes the next generation).

    The index keeps its trained cells (a clone, emptied and refilled): only the vectors move."""
    import faiss
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    number = current.batch_names().index(batch_id)
    batches = [b for i, b in enumerate(current.manifest["batches"]) if i != number]
    assert current.ids is not None and current.index is not None  # a named batch means a non-empty history
    batch_col = current.ids.column("batch")
    keep_mask = np.asarray(pc.not_equal(batch_col, number).to_numpy(zero_copy_only=False), dtype=bool)
    removed = int((~keep_mask).sum())
    vectors = all_vectors(current.index)[keep_mask]
    index = faiss.clone_index(current.index)
    index.reset()
    if len(vectors):
        add(index, vectors)
    ids = current.ids.filter(pa.array(keep_mask))
    renumbered = pc.if_else(pc.greater(ids.column("batch"), number), pc.subtract(ids.column("batch"), 1),
                            ids.column("batch")).cast(pa.int32())
    ids = ids.set_column(ids.schema.get_field_index("batch"), "batch", renumbered)
    manifest = {**current.manifest, "batches": batches, "count": int(index.ntotal)}
    log.info("history: batch %r is already in %s: its %d records are replaced", batch_id, current.dir, removed)
    kept = History(current.dir, manifest, index if index.ntotal else None, ids if ids.num_rows else None)
    return kept, removed


def rebuild_history(history_dir: str | Path, *, spec: EmbeddingSpec | None = None,
                    cache_dir: str | Path | None = None, params: IndexParams | None = None) -> dict[str, Any]:
    """Re-create the index and id map from the accepted batches the manifest lists (all must still exist
    with the recorded sha256). ``spec`` switches the embedding; default: the one in the manifest."""
    path = Path(history_dir)
    with _locked(path):
        manifest = _read_manifest(path)
        sources: list[tuple[Path, str, str]] = []
        for b in manifest["batches"]:
            src = Path(b["source"])
            if not src.is_file():
                raise HistoryError(f"cannot rebuild history {path}: accepted batch {src} (batch {b['batch_id']}) is "
                                   "gone; restore it, or move the history away to start a new one")
            if _sha256(src) != b["source_sha256"]:
                raise HistoryError(f"cannot rebuild history {path}: accepted batch {src} changed since it was added "
                                   "(sha256 differs); restore the original, or move the history away")
            sources.append((src, b["source_sha256"], b["batch_id"]))
        use_spec = spec or EmbeddingSpec.from_json(manifest["embedding"])
        empty = History(path, {**manifest, "count": 0, "batches": []})
        log.info("history: rebuilding %s from %d accepted batches", path, len(sources))
        return _write_next(path, empty, sources, spec=use_spec, cache_dir=cache_dir, params=params or IndexParams(),
                           generation=int(manifest["generation"]))


def _write_next(path: Path, current: History, sources: list[tuple[Path, str, str]], *, spec: EmbeddingSpec,
                cache_dir: str | Path | None, params: IndexParams, generation: int | None = None) -> dict[str, Any]:
    import faiss
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    started = time.perf_counter()
    manifest = dict(current.manifest)
    batches = list(manifest.get("batches", []))
    known: set[str] = set(current.ids.column("content_sha256").to_pylist()) if current.ids is not None else set()
    new_vectors: list[np.ndarray] = []
    new_ids: list[pa.Table] = []
    skipped = 0
    for src, digest, batch_id in sources:
        table = pq.read_table(src, columns=list(ID_COLUMNS))
        vectors = embed_table(src, spec, cache_dir=cache_dir)
        keep = []
        for i, h in enumerate(table.column("content_sha256").to_pylist()):
            if h not in known:
                known.add(h)
                keep.append(i)
        skipped += table.num_rows - len(keep)
        batch_no = len(batches)
        batches.append({"batch_id": batch_id, "source": str(src.resolve()), "source_sha256": digest,
                        "records": table.num_rows, "added": len(keep)})
        if keep:
            taken = table.take(pa.array(keep, pa.int64()))
            new_ids.append(taken.append_column("batch", pa.array([batch_no] * len(keep), pa.int32())))
            new_vectors.append(vectors[keep])
    added = sum(len(v) for v in new_vectors)
    vectors = np.concatenate(new_vectors) if new_vectors else np.zeros((0, 0), dtype=np.float32)
    old_count = current.count
    total = old_count + added
    index, info = _grow_index(current, vectors, total, params, manifest.get("index", {}))
    generation = (generation if generation is not None else int(manifest.get("generation", 0))) + 1
    id_tables = ([current.ids] if current.ids is not None else []) + new_ids
    ids = pa.concat_tables([t.cast(_id_schema()) for t in id_tables]) if id_tables else _id_schema().empty_table()
    index_file, ids_file = path / f"index-{generation:06d}.faiss", path / f"ids-{generation:06d}.parquet"
    for final, writer in ((index_file, lambda p: faiss.write_index(index, str(p))),
                          (ids_file, lambda p: pq.write_table(ids, p, compression="zstd"))):
        with atomic_write(final) as tmp:
            writer(tmp)
    manifest.update({
        "format": FORMAT, "generation": generation, "count": total, "embedding": spec.to_json(),
        "fingerprint": spec.fingerprint(), "dim": int(index.d),
        "index": {**info, "file": index_file.name, "sha256": _sha256(index_file)},
        "ids": {"file": ids_file.name, "sha256": _sha256(ids_file)},
        "batches": batches,
    })
    write_json_atomic(path / MANIFEST, manifest)  # the commit point
    for p in path.iterdir():  # the previous generation, and leftovers of an interrupted update
        m = _GENERATION_FILE.match(p.name)
        if m and int(m.group(2)) != generation:
            p.unlink(missing_ok=True)
    elapsed = time.perf_counter() - started
    log.info("history: generation %d of %s: %d records (+%d, %d already there), %s index, %.1f s", generation, path,
             total, added, skipped, info["type"], elapsed)
    return _summary(manifest, added=added, skipped=skipped, seconds=round(elapsed, 2))


def _grow_index(current: History, vectors: np.ndarray, total: int, params: IndexParams,
                info: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """Add to the current index, or rebuild it when it must change kind (flat -> IVF) or be re-trained."""
    import numpy as np

    index = current.index
    trained_at = int(info.get("trained_at", 0) or 0)
    kind = current.kind
    must_rebuild = index is None or (kind == "flat" and total > params.flat_max) or (
        kind == "ivf" and trained_at and total > RETRAIN_GROWTH * trained_at)
    if not must_rebuild:
        if len(vectors):
            add(index, vectors)
        return index, {"type": kind, "nlist": int(info.get("nlist", 0)), "trained_at": trained_at}
    old = all_vectors(index) if index is not None and index.ntotal else None
    everything = vectors if old is None else (np.concatenate([old, vectors]) if len(vectors) else old)
    if everything.size == 0:
        everything = np.zeros((0, 1), dtype=np.float32)
    fresh = new_index(everything, params, n=total)
    add(fresh, everything)
    kind = index_kind(fresh)
    nlist = int(fresh.nlist) if kind == "ivf" else 0
    return fresh, {"type": kind, "nlist": nlist, "trained_at": total if kind == "ivf" else 0}


def _id_schema() -> pa.Schema:
    import pyarrow as pa

    return pa.schema([(c, pa.string()) for c in ID_COLUMNS] + [("batch", pa.int32())])


def describe_history(history_dir: str | Path) -> dict[str, Any]:
    """Load and verify a history; a small summary of it (for ``tunegate history show``)."""
    h = open_history(history_dir)
    return _summary(h.manifest, embedding=h.manifest.get("embedding"), notes=h.notes,
                    batch_ids=h.batch_names())


def switched_spec(history_dir: str | Path, *, backend: str | None, fields: str | None) -> EmbeddingSpec | None:
    """The history's embedding with a new backend and/or fields (``None`` when neither changes)."""
    if not backend and not fields:
        return None
    old = _read_manifest(Path(history_dir))["embedding"]
    return EmbeddingSpec.from_json({**old, **({"backend": backend} if backend else {}),
                                    **({"fields": fields} if fields else {})})


def _summary(manifest: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"history_records": manifest.get("count", 0), "generation": manifest.get("generation", 0),
            "index": manifest.get("index", {}).get("type", "empty"), "batches": len(manifest.get("batches", [])),
            **extra}
