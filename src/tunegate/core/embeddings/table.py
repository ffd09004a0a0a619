"""Embedding a whole canonical table, through the cache; and the backend chosen by name."""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunegate.core.embeddings.base import Embedder
from tunegate.core.embeddings.cache import EmbeddingCache
from tunegate.core.embeddings.hashing import HashingEmbedder
from tunegate.core.embeddings.models import MiniLMEmbedder, StaticEmbedder
from tunegate.core.embeddings.spec import EmbeddingSpec
from tunegate.core.vector_index import usable_cores

if TYPE_CHECKING:
    import numpy as np

    from tunegate.core.checks.base import CanonicalBatch

log = logging.getLogger(__name__)


def build_embedder(spec: EmbeddingSpec) -> Embedder:
    """The backend ``spec.backend`` names (model backends load their model on first use)."""
    backends: dict[str, Callable[[EmbeddingSpec], Embedder]] = {
        "hashing": HashingEmbedder, "minilm": MiniLMEmbedder, "static": StaticEmbedder}
    return backends[spec.backend](spec)


_READ_BATCH = 20_000


def embed_table(source: CanonicalBatch | str | Path, spec: EmbeddingSpec, *, cache_dir: str | Path | None = None,
                embedder: Embedder | None = None) -> np.ndarray:
    """Vectors of every record of a canonical table (a :class:`CanonicalBatch` or a Parquet path), in order.

    Records already in the cache are not embedded again; exact copies within the table are embedded once.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    embedder = embedder or build_embedder(spec)
    cache = EmbeddingCache(cache_dir, spec) if cache_dir is not None else None
    columns = ["content_sha256", *spec.fields]
    if isinstance(source, (str, Path)):
        pf = pq.ParquetFile(source)
        n = pf.metadata.num_rows
        batches: Iterable[Any] = pf.iter_batches(batch_size=_READ_BATCH, columns=columns)
    else:
        n = source.num_rows
        batches = (rb for _, rb in source.iter_batches(columns=columns, batch_size=_READ_BATCH))
    out = np.zeros((n, embedder.dim), dtype=np.float32)
    from concurrent.futures import Future, ThreadPoolExecutor

    from tunegate.core.progress import progress

    def texts_of(rb: Any, todo: list[int]) -> dict[str, list[str]]:
        take = pa.array(todo, type=pa.int64())
        return {f: [t or "" for t in rb.column(1 + k).take(take).to_pylist()] for k, f in enumerate(spec.fields)}

    # Read batches go to a pool of embedding threads, at most one per core ahead of the one being stored, and
    # are stored (and cached) in order: the same vectors and cache whatever the threads.
    workers = usable_cores() if embedder.thread_safe else 1
    pending: deque[tuple[int, list[str], np.ndarray, list[str], Future[np.ndarray] | None]] = deque()

    def store() -> None:
        at, digests, miss, first, job = pending.popleft()
        if job is not None:
            vecs = job.result()
            pos = {d: j for j, d in enumerate(first)}
            out[at + miss] = vecs[[pos[digests[i]] for i in miss]]
            if cache is not None:
                cache.put(first, vecs)
        tracker.update(len(digests))

    started, hits, start = time.perf_counter(), 0, 0
    with progress(f"embed {spec.describe()}", n, "records") as tracker, ThreadPoolExecutor(workers) as pool:
        for rb in batches:
            digests = rb.column(0).to_pylist()
            rows = len(digests)
            found = np.zeros(rows, dtype=bool)
            if cache is not None:
                found, cached = cache.get(digests)
                if found.any():
                    out[start:start + rows][found] = cached[found]
                hits += int(found.sum())
            miss = np.flatnonzero(~found)
            first: dict[str, int] = {}
            for i in miss.tolist():
                first.setdefault(digests[i], i)
            job = pool.submit(embedder.embed, texts_of(rb, list(first.values()))) if first else None
            pending.append((start, digests, miss, list(first), job))
            start += rows
            while len(pending) > workers:
                store()
        while pending:
            store()
    elapsed = time.perf_counter() - started
    log.info("embeddings: %d records with %s in %.1f s (%d from cache)", n, spec.describe(), elapsed, hits)
    return out

