"""Writing the history: add an accepted batch, replace a rerun's batch, rebuild from the accepted batches.

One writer at a time (an OS-level lock that dies with its holder); each change is a new generation,
committed by the manifest's rename, so a crash leaves the previous generation intact.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunegate.core.embeddings import EmbeddingSpec, embed_table
from tunegate.core.history.reading import (
    _GENERATION_FILE,
    FORMAT,
    ID_COLUMNS,
    MANIFEST,
    History,
    _load_history,
    _read_file,
    _read_id_maps,
    _read_index,
    _read_manifest,
    _recovery,
    _sha256,
    _summary,
)
from tunegate.core.io import atomic_write, owned_lock, write_json_atomic
from tunegate.core.vector_index import IndexParams, add, all_vectors, index_kind, new_index
from tunegate.exceptions import HistoryConflict, HistoryError

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

log = logging.getLogger(__name__)

LOCK = ".update.lock"
#: Seconds an update waits for another writer of the same history before giving up.
LOCK_TIMEOUT = 600.0
#: Re-train the IVF cells once the history has grown this many times since they were trained: cells
#: trained on early data fit later data worse (longer lists, lower recall).
RETRAIN_GROWTH = 4.0
#: A night appends its records as a segment (its own index file on the base's trained cells) instead of
#: rewriting the whole index; at this many segments the next update folds them into a new base.
MAX_SEGMENTS = 8


@contextlib.contextmanager
def writer_lock(path: Path, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
    """One writer at a time, through an OS-level lock (flock) that is released when its holder dies."""
    def busy(holder: str) -> HistoryError:
        return HistoryError(f"history {path} is being updated by another process ({holder}); waited {timeout:.0f} s "
                            "for it (the lock is released when that process ends)")

    with owned_lock(path / LOCK, timeout=timeout, busy=busy):
        yield


def update_history(history_dir: str | Path, accepted: str | Path, *, batch_id: str | None = None,
                   spec: EmbeddingSpec | None = None, cache_dir: str | Path | None = None,
                   params: IndexParams | None = None, expected_generation: int | None = None,
                   statistics: dict[str, Any] | None = None) -> dict[str, Any]:
    """Add the records of an accepted batch (``accepted.parquet``, canonical schema) to the history.

    Call it after the gate when the verdict is not ``halt``. Idempotent: a file already added (same
    sha256) adds nothing, and records whose ``content_sha256`` is already in the history are skipped.
    A batch whose ``batch_id`` is already in the history (a rerun of that night) *replaces* that batch's
    contribution: its earlier records are removed before the new ones are added.
    ``spec`` is only used to start a new history (default: the ``hashing`` backend over all fields);
    an existing history keeps its own, and a different ``spec`` is a :class:`ConfigError`. Pass the
    checks' ``cache_dir`` to reuse the vectors they computed. Returns a small summary.

    ``expected_generation``: the generation the batch's checks compared against. If another writer has
    committed since (the generation moved), nothing is written and :class:`HistoryConflict` is raised: the
    batch may duplicate records it was never compared with, so it must be re-checked first. One consistent
    view per batch, whatever runs concurrently.

    ``statistics``: what the checks measured over the whole batch before the gate (:func:`batch_statistics` of
    its summary), kept in the batch's ``night`` entry as tomorrow's baseline (:func:`past_nights`); default:
    read from the ``summary.json`` beside ``accepted`` when there is one.
    """
    path = Path(history_dir)
    source = Path(accepted)
    if not source.is_file():
        raise HistoryError(f"accepted batch {source} does not exist; nothing added to history {path}")
    with writer_lock(path):
        # never the in-process copy: this one gets added to. A history that takes a segment is read without its
        # vectors (id map and trained cells only); the others are loaded whole
        current = _appendable(path) or _load_history(path, verify=True)
        generation = int(current.manifest.get("generation", 0))
        if expected_generation is not None and generation != expected_generation:
            raise HistoryConflict(
                f"history {path} moved from generation {expected_generation} to {generation} while this batch "
                f"was checked (batches now: {', '.join(current.batch_names()[-5:]) or 'none'}); re-check the batch "
                "against the current history (rerun its scan), then publish")
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
            if current.index is None:
                current = _load_history(path, verify=True)
            current, replaced = _drop_batch(current, name)
        summary = _write_next(path, current, [(source, digest, name)], spec=use_spec, cache_dir=cache_dir,
                              params=params or IndexParams(), statistics={name: statistics} if statistics else None)
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
    with writer_lock(path):
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
                cache_dir: str | Path | None, params: IndexParams, generation: int | None = None,
                statistics: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
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
        night = _night(src, (statistics or {}).get(batch_id))
        batches.append({"batch_id": batch_id, "source": str(src.resolve()), "source_sha256": digest,
                        "records": table.num_rows, "added": len(keep), **({"night": night} if night else {})})
        if keep:
            taken = table.take(pa.array(keep, pa.int64()))
            new_ids.append(taken.append_column("batch", pa.array([batch_no] * len(keep), pa.int32())))
            new_vectors.append(vectors[keep])
    added = sum(len(v) for v in new_vectors)
    vectors = np.concatenate(new_vectors) if new_vectors else np.zeros((0, 0), dtype=np.float32)
    total = current.count + added
    generation = (generation if generation is not None else int(manifest.get("generation", 0))) + 1
    info = manifest.get("index", {})
    if current.index is None and current.count and _must_rebuild(str(info.get("type", "flat")), total, params, info):
        current = _load_history(path, verify=True)  # the cells are re-trained: every vector is needed
    if current.index is None and current.count:
        files = _write_segment(path, generation, current, vectors, new_ids)
    else:
        files = _write_base(path, generation, current, vectors, new_ids, total=total, params=params, info=info)
    manifest.update({"format": FORMAT, "generation": generation, "count": total, "embedding": spec.to_json(),
                     "fingerprint": spec.fingerprint(), "batches": batches, **files})
    if not manifest.get("segments"):
        manifest.pop("segments", None)
    write_json_atomic(path / MANIFEST, manifest)  # the commit point
    referenced = _referenced(manifest)
    for p in path.iterdir():  # files of earlier generations no longer referenced, leftovers of an interrupted update
        if _GENERATION_FILE.match(p.name) and p.name not in referenced:
            p.unlink(missing_ok=True)
    elapsed = time.perf_counter() - started
    log.info("history: generation %d of %s: %d records (+%d, %d already there), %s index%s, %.1f s", generation,
             path, total, added, skipped, manifest["index"]["type"],
             f" + {len(manifest['segments'])} segment(s)" if manifest.get("segments") else "", elapsed)
    return _summary(manifest, added=added, skipped=skipped, seconds=round(elapsed, 2))


def _appendable(path: Path) -> History | None:
    """The history without its vectors (manifest, id map, trained cells) when tonight's records can go into a new
    segment: an IVF history with its cells on file and fewer than :data:`MAX_SEGMENTS` segments. ``None``
    otherwise (empty, flat, written before segments existed, or due to be folded): the caller loads it whole."""
    if not (path / MANIFEST).is_file():
        return None
    manifest = _read_manifest(path)
    cells = manifest.get("cells")
    segments = manifest.get("segments") or []
    if not manifest["count"] or not cells or manifest["index"].get("type") != "ivf" or len(segments) >= MAX_SEGMENTS:
        return None
    empty = _read_file(path, manifest, (cells["file"], cells["sha256"]), _read_index, verify=True)
    ids = _read_id_maps(path, manifest, verify=True)
    if ids.num_rows != manifest["count"]:
        raise HistoryError(f"history {path}: the manifest counts {manifest['count']} records but the id maps hold "
                           f"{ids.num_rows}; " + _recovery(path))
    return History(path, manifest, None, ids, cells=empty)


def _must_rebuild(kind: str, total: int, params: IndexParams, info: dict[str, Any]) -> bool:
    trained_at = int(info.get("trained_at", 0) or 0)
    return (kind == "flat" and total > params.flat_max) or (kind == "ivf" and bool(trained_at)
                                                            and total > RETRAIN_GROWTH * trained_at)


def _write_segment(path: Path, generation: int, current: History, vectors: np.ndarray,
                   new_ids: list[pa.Table]) -> dict[str, Any]:
    """Tonight's records as one more segment: an IVF index on the base's cells holding only them, and their id
    map. The base and the earlier segments are not touched (nor read: their checksums stand)."""
    import faiss
    import pyarrow as pa

    segments = list(current.manifest.get("segments") or [])
    if not len(vectors):
        return {"segments": segments}
    index = faiss.clone_index(current.cells)
    add(index, vectors)
    ids = pa.concat_tables([t.cast(_id_schema()) for t in new_ids])
    index_file, ids_file = _write_files(path, generation, index, ids)
    segments.append({"index": index_file.name, "index_sha256": _sha256(index_file), "ids": ids_file.name,
                     "ids_sha256": _sha256(ids_file), "count": int(index.ntotal)})
    return {"segments": segments}


def _write_base(path: Path, generation: int, current: History, vectors: np.ndarray, new_ids: list[pa.Table], *,
                total: int, params: IndexParams, info: dict[str, Any]) -> dict[str, Any]:
    """The whole history as one index (its segments folded in), the id map, and the trained cells (IVF)."""
    import faiss
    import pyarrow as pa

    index, info = _grow_index(current, vectors, total, params, info)
    id_tables = ([current.ids] if current.ids is not None else []) + new_ids
    ids = pa.concat_tables([t.cast(_id_schema()) for t in id_tables]) if id_tables else _id_schema().empty_table()
    index_file, ids_file = _write_files(path, generation, index, ids)
    files: dict[str, Any] = {"index": {**info, "file": index_file.name, "sha256": _sha256(index_file)},
                             "ids": {"file": ids_file.name, "sha256": _sha256(ids_file)}, "segments": [],
                             "dim": int(index.d)}
    if info["type"] == "ivf":
        empty = faiss.clone_index(index)
        empty.reset()
        cells_file = path / f"cells-{generation:06d}.faiss"
        with atomic_write(cells_file) as tmp:
            faiss.write_index(empty, str(tmp))
        files["cells"] = {"file": cells_file.name, "sha256": _sha256(cells_file)}
    else:
        files["cells"] = None
    return files


def _write_files(path: Path, generation: int, index: Any, ids: pa.Table) -> tuple[Path, Path]:
    import faiss
    import pyarrow.parquet as pq

    index_file, ids_file = path / f"index-{generation:06d}.faiss", path / f"ids-{generation:06d}.parquet"
    for final, writer in ((index_file, lambda p: faiss.write_index(index, str(p))),
                          (ids_file, lambda p: pq.write_table(ids, p, compression="zstd"))):
        with atomic_write(final) as tmp:
            writer(tmp)
    return index_file, ids_file


def _referenced(manifest: dict[str, Any]) -> set[str]:
    """The files a manifest's generation is made of."""
    names = {manifest["index"]["file"], manifest["ids"]["file"]}
    if manifest.get("cells"):
        names.add(manifest["cells"]["file"])
    for seg in manifest.get("segments") or []:
        names.update((seg["index"], seg["ids"]))
    return names


def batch_statistics(summary: dict[str, Any]) -> dict[str, Any]:
    """What tomorrow's checks compare with, from a night's summary: the refusal count of the open-ended
    responses (``poison_content``), before the gate set anything aside, and the sketch of those responses that
    lets tomorrow count a response re-sent on several nights once
    (:func:`~tunegate.core.checks.poison.refusals.distinct_responses`)."""
    metrics = (summary.get("checks", {}).get("poison_content", {}).get("metrics") or {}).get("refusals") or {}
    if not metrics.get("responses"):
        return {}
    sketch = metrics.get("sketch")
    groups = metrics.get("groups")
    return {"refusals": {"responses": int(metrics["responses"]), "refusals": int(metrics["refusals"]),
                         "anomalous": bool(metrics.get("anomalous")),
                         **({"sketch": sketch} if isinstance(sketch, dict) else {}),
                         **({"groups": groups} if isinstance(groups, dict) else {})}}


def _night(accepted: Path, statistics: dict[str, Any] | None = None, top: int = 5) -> dict[str, Any] | None:
    """What the gate did with the night whose accepted file this is: quarantined and rejected counts and the top
    reasons, read from the result set beside it (the report's trend over nights), plus the batch's
    ``statistics`` (default: :func:`batch_statistics` of the ``summary.json`` beside it, when there is one).
    ``None`` when the file is not a gate output (``tunegate history update`` accepts any canonical Parquet
    file); manifests written before this existed have no ``night`` either, and readers treat it as optional."""
    import json

    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from tunegate.core.ingest import REJECTED_FILE
    from tunegate.core.outputs import QUARANTINE_FILE, SUMMARY_FILE

    quarantine = accepted.parent / QUARANTINE_FILE
    if not quarantine.is_file():
        return None
    file = pq.ParquetFile(quarantine)
    reasons: dict[str, int] = {}
    for batch in file.iter_batches(columns=["reasons"], batch_size=65_536):
        for item in pc.value_counts(pc.list_flatten(batch.column(0))).to_pylist():
            reasons[item["values"]] = reasons.get(item["values"], 0) + int(item["counts"])
    rejected, rejected_count = accepted.parent / REJECTED_FILE, 0
    if rejected.is_file():
        with open(rejected, "rb") as f:
            rejected_count = sum(1 for line in f if line.strip())
    if statistics is None and (accepted.parent / SUMMARY_FILE).is_file():
        try:
            statistics = batch_statistics(json.loads((accepted.parent / SUMMARY_FILE).read_text(encoding="utf-8")))
        except (OSError, ValueError) as exc:
            log.warning("history: %s unreadable, the night's batch statistics are left out: %s",
                        accepted.parent / SUMMARY_FILE, exc)
    return {"quarantined": int(file.metadata.num_rows), "rejected": rejected_count,
            "reasons": dict(sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))[:top]), **(statistics or {})}


def _grow_index(current: History, vectors: np.ndarray, total: int, params: IndexParams,
                info: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """Add to the current index, or rebuild it when it must change kind (flat -> IVF) or be re-trained."""
    import numpy as np

    index = current.index
    trained_at = int(info.get("trained_at", 0) or 0)
    kind = current.kind
    if index is not None and not _must_rebuild(kind, total, params, info):
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


def switched_spec(history_dir: str | Path, *, backend: str | None, fields: str | None) -> EmbeddingSpec | None:
    """The history's embedding with a new backend and/or fields (``None`` when neither changes)."""
    if not backend and not fields:
        return None
    old = _read_manifest(Path(history_dir))["embedding"]
    return EmbeddingSpec.from_json({**old, **({"backend": backend} if backend else {}),
                                    **({"fields": fields} if fields else {})})
