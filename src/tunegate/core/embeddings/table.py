"""Embedding a whole canonical table, through the cache; and the backend chosen by name."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunegate.core.embeddings.base import Embedder
from tunegate.core.embeddings.cache import EmbeddingCache
from tunegate.core.embeddings.hashing import HashingEmbedder
from tunegate.core.embeddings.models import MiniLMEmbedder, StaticEmbedder
from tunegate.core.embeddings.spec import EmbeddingSpec

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
    from tunegate.core.progress import progress

    started, hits, start = time.perf_counter(), 0, 0
    with progress(f"embed {spec.describe()}", n, "records") as tracker:
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
            if len(miss):
                first: dict[str, int] = {}
                for i in miss:
                    first.setdefault(digests[i], int(i))
                todo = list(first.values())
                take = pa.array(todo, type=pa.int64())
                texts = {f: [t or "" for t in rb.column(1 + k).take(take).to_pylist()]
                         for k, f in enumerate(spec.fields)}
                vecs = embedder.embed(texts)
                pos = {d: j for j, d in enumerate(first)}
                out[start + miss] = vecs[[pos[digests[i]] for i in miss]]
                if cache is not None:
                    cache.put(list(first), vecs)
            start += rows
            tracker.update(rows)
    elapsed = time.perf_counter() - started
    log.info("embeddings: %d records with %s in %.1f s (%d from cache)", n, spec.describe(), elapsed, hits)
    return out
