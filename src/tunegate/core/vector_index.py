"""FAISS inner-product indexes over unit vectors: exact (flat) below a size threshold, IVF above.

Both the batch's own k-nearest-neighbour graph and the persisted history use these. Flat search is exact
and costs ``O(n^2)`` for a self-join; IVF clusters the vectors into ``nlist`` cells (k-means) and
searches ``nprobe`` of them, which trades a little recall for a large speed-up. Measured here on real
records (``bench/faiss``): at 100k x 256 the self-join takes ~34 s flat and ~9 s IVF (train included)
with recall@10 of 0.99, and recall of the near-duplicate pairs (cosine >= 0.92) above 0.999.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tunegate.exceptions import ConfigError

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)

#: At or below this many vectors the index is exact. Flat and IVF cost the same near 20k vectors here. It was
#: 50k until the IVF self-join ran one BLAS thread per cell: at 40k the exact search took 6.5-19 s (19 s with
#: another process on the machine) against 1.9 s for IVF, which flagged the same near-duplicates (0 records
#: differ) and 2 more outliers of 40,000 (bench/scale/RESULTS.md).
FLAT_MAX = 20_000
#: IVF cells probed by the batch's self-join. Flagged near-duplicates equal exact search's at 16 (bench/faiss).
NPROBE = 16
#: IVF cells probed per query when a batch searches the history: a per-query search costs several times
#: more per probe than the self-join's matrix products; at 8, 99.97% of the flagged records of exact search.
HISTORY_NPROBE = 8
_TRAIN_PER_LIST = 40  # k-means training points per cell (FAISS warns below 39)
_KMEANS_ITERATIONS = 10
_SEARCH_BATCH = 16_384
#: Queries from which an IVF-Flat search runs cell by cell (:func:`_ivf_search_blocked`), and per call of it.
_BLOCKED_MIN_QUERIES = 1_000
_BLOCKED_QUERIES = 65_536
_JOIN_BLOCK = 1 << 24  # scores per block of the IVF self-join (64 MB)


@dataclass(frozen=True)
class IndexParams:
    """How an index is chosen and searched; validated here so a bad option fails at construction."""

    flat_max: int = FLAT_MAX
    nprobe: int = NPROBE
    nlist: int | None = None  # default: about 4 * sqrt(n)
    history_nprobe: int = HISTORY_NPROBE

    def __post_init__(self) -> None:
        if not isinstance(self.flat_max, int) or self.flat_max < 0:
            raise ConfigError(f"flat_max must be a non-negative integer, got {self.flat_max!r}")
        for name in ("nprobe", "history_nprobe"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.nlist is not None and (not isinstance(self.nlist, int) or self.nlist < 1):
            raise ConfigError(f"nlist must be a positive integer, got {self.nlist!r}")

    def lists_for(self, n: int) -> int:
        if self.nlist is not None:
            return max(1, min(self.nlist, n // _TRAIN_PER_LIST or 1))
        return max(1, min(int(4 * math.sqrt(n)), n // _TRAIN_PER_LIST or 1))


def index_kind(index: Any) -> str:
    import faiss

    return "ivf" if faiss.try_extract_index_ivf(index) is not None else "flat"


def build_index(vectors: np.ndarray, params: IndexParams | None = None) -> Any:
    """A flat index for ``len(vectors) <= flat_max``, otherwise a trained IVF-Flat index, holding ``vectors``."""
    params = params or IndexParams()
    index = new_index(vectors, params)
    add(index, vectors)
    return index


def new_index(sample: np.ndarray, params: IndexParams, n: int | None = None) -> Any:
    """An empty index for ``n`` vectors (default ``len(sample)``), trained on ``sample`` when IVF."""
    import faiss
    import numpy as np

    n = len(sample) if n is None else n
    d = sample.shape[1]
    if n <= params.flat_max:
        return faiss.IndexFlatIP(d)
    nlist = params.lists_for(len(sample))
    quantizer = faiss.IndexFlatIP(d)
    index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = 1234
    index.cp.niter = _KMEANS_ITERATIONS
    take = min(len(sample), nlist * _TRAIN_PER_LIST)
    rng = np.random.default_rng(0)
    train = sample if take == len(sample) else sample[np.sort(rng.choice(len(sample), take, replace=False))]
    started = time.perf_counter()
    index.train(np.ascontiguousarray(train, dtype=np.float32))
    index.nprobe = params.nprobe
    log.info("vector index: trained IVF with %d lists on %d vectors in %.1f s", nlist, take,
             time.perf_counter() - started)
    return index


def add(index: Any, vectors: np.ndarray) -> None:
    import numpy as np

    for start in range(0, len(vectors), 100_000):
        index.add(np.ascontiguousarray(vectors[start:start + 100_000], dtype=np.float32))


def search(index: Any, queries: np.ndarray, k: int, nprobe: int = NPROBE) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` inner products and positions for each query (``-1`` where fewer than ``k`` exist).

    An IVF-Flat index searched by many queries (a night against its history) is searched cell by cell
    (:func:`_ivf_search_blocked`): the same probes and scores as FAISS's search, as matrix products."""
    import faiss
    import numpy as np

    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        ivf.nprobe = nprobe
    n = len(queries)
    sims = np.full((n, k), -np.inf, dtype=np.float32)
    ids = np.full((n, k), -1, dtype=np.int64)
    if index.ntotal == 0 or n == 0:
        return sims, ids
    blocked = ivf is not None and n >= _BLOCKED_MIN_QUERIES and _array_lists(ivf)
    step = _BLOCKED_QUERIES if blocked else _SEARCH_BATCH
    for start in range(0, n, step):
        q = np.ascontiguousarray(queries[start:start + step], dtype=np.float32)
        d, i = _ivf_search_blocked(ivf, q, k, nprobe) if blocked else index.search(q, k)
        sims[start:start + len(q)] = d
        ids[start:start + len(q)] = i
    sims[ids < 0] = -np.inf
    return sims, ids


def _array_lists(ivf: Any) -> bool:
    """An IVF-Flat index whose lists are in memory (what ``read_index`` and ``add`` give): readable in place."""
    import faiss

    return (isinstance(faiss.downcast_index(ivf), faiss.IndexIVFFlat)
            and isinstance(faiss.downcast_InvertedLists(ivf.invlists), faiss.ArrayInvertedLists))


def _ivf_search_blocked(ivf: Any, queries: np.ndarray, k: int, nprobe: int) -> tuple[np.ndarray, np.ndarray]:
    """FAISS's IVF search, one matrix product per cell instead of one scan per query.

    Each query probes its own ``nprobe`` nearest cells (the quantizer's search, as FAISS does); the queries are
    then grouped by cell, and each cell's vectors, read in place from the inverted lists, are scored against
    every query that probes it in one BLAS product. Each (query, probe) keeps its top ``k``; a query's top
    ``k`` is the best of its probes'. Same candidates and scores as ``index.search``; equal scores (exact
    copies) are taken earliest position first, whichever cells or segments hold them (FAISS: in scan order).
    100k queries against 856k vectors (3,700 cells, 8 probes), two cores: 5.2 s against FAISS's 14.2 s in the same
    run (``bench/scale/history_search.py``; bench/scale/RESULTS.md, ninth session)."""
    from concurrent.futures import ThreadPoolExecutor

    import faiss
    import numpy as np
    from threadpoolctl import threadpool_limits

    quantizer = faiss.downcast_index(ivf.quantizer)
    nlist, d = int(ivf.nlist), int(ivf.d)
    nprobe = min(nprobe, nlist)
    n = len(queries)
    _, probes = quantizer.search(queries, nprobe)
    flat = probes.ravel()
    order = np.argsort(flat, kind="stable")  # (query, probe) slots grouped by cell
    bounds = np.searchsorted(flat[order], np.arange(nlist + 1))
    lists = ivf.invlists
    slot_sims = np.full((n * nprobe, k), -np.inf, dtype=np.float32)
    slot_ids = np.full((n * nprobe, k), -1, dtype=np.int64)

    def join(cell: int) -> None:
        slots = order[bounds[cell]:bounds[cell + 1]]
        size = int(lists.list_size(cell))
        if not len(slots) or size == 0:
            return
        vectors = faiss.rev_swig_ptr(lists.get_codes(cell), size * lists.code_size).view(np.float32).reshape(size, d)
        positions = faiss.rev_swig_ptr(lists.get_ids(cell), size).view(np.int64)
        kc = min(k, size)
        step = max(1, _JOIN_BLOCK // size)  # bounds the score block of a crowded cell
        for lo in range(0, len(slots), step):
            block = slots[lo:lo + step]
            top_scores, top = top_k(queries[block // nprobe] @ vectors.T, kc)
            slot_sims[block, :kc] = top_scores  # slots are disjoint between cells
            slot_ids[block, :kc] = positions[top]

    with threadpool_limits(1, "blas"), ThreadPoolExecutor(max_workers=usable_cores()) as pool:
        for _ in pool.map(join, range(nlist)):
            pass
    slot_sims, slot_ids = slot_sims.reshape(n, nprobe * k), slot_ids.reshape(n, nprobe * k)
    at = np.lexsort((slot_ids, -slot_sims), axis=1)[:, :k]  # equal scores: the earlier position first
    return np.take_along_axis(slot_sims, at, axis=1), np.take_along_axis(slot_ids, at, axis=1)


def self_knn(vectors: np.ndarray, k: int, params: IndexParams | None = None) -> tuple[np.ndarray, np.ndarray, str]:
    """Each vector's ``k`` nearest other vectors: ``(sims, positions, index kind)``; self is excluded.

    Up to ``flat_max`` vectors: exact flat search. Above: an IVF self-join. The vectors are clustered into
    ``nlist`` cells (k-means, as IVF does); each cell's members are compared, with one matrix product
    per cell, against the members of the ``nprobe`` cells whose centroids are nearest to its own
    centroid. That is the work of an IVF search with ``nprobe`` probes, done as dense matrix products
    instead of one query at a time (several times faster here), with the probes chosen per cell rather
    than per vector; recall against exact search is measured in ``bench/faiss``.
    """
    import numpy as np

    params = params or IndexParams()
    n = len(vectors)
    started = time.perf_counter()
    kk = min(k + 1, max(n, 1))
    if n <= params.flat_max:
        index = build_index(vectors, params)
        sims, ids = search(index, vectors, kk, params.nprobe)
        kind = "flat"
    else:
        sims, ids = _ivf_self_join(vectors, kk, params)
        kind = "ivf"
    rows = np.arange(n)[:, None]
    is_self = ids == rows
    # Drop self where it was found; otherwise (ties among exact copies pushed it out) drop the last hit.
    drop = np.where(is_self.any(axis=1), is_self.argmax(axis=1), kk - 1)
    keep = np.ones_like(ids, dtype=bool)
    keep[np.arange(n), drop] = False
    sims = sims[keep].reshape(n, kk - 1)
    ids = ids[keep].reshape(n, kk - 1)
    if kk - 1 < k:
        pad = k - (kk - 1)
        sims = np.hstack([sims, np.full((n, pad), -np.inf, dtype=np.float32)])
        ids = np.hstack([ids, np.full((n, pad), -1, dtype=np.int64)])
    log.info("vector index: self kNN (k=%d) of %d vectors with %s in %.1f s", k, n, kind,
             time.perf_counter() - started)
    return sims, ids, kind


def _ivf_self_join(vectors: np.ndarray, k: int, params: IndexParams) -> tuple[np.ndarray, np.ndarray]:
    import faiss
    import numpy as np

    n = len(vectors)
    ivf = new_index(vectors, params)  # trains the cells
    quantizer = faiss.downcast_index(ivf.quantizer)
    nlist = int(ivf.nlist)
    _, cell = search(quantizer, vectors, 1)
    cell = cell[:, 0]
    order = np.argsort(cell, kind="stable")
    bounds = np.searchsorted(cell[order], np.arange(nlist + 1))
    centroids = quantizer.reconstruct_n(0, nlist)
    _, near = quantizer.search(np.ascontiguousarray(centroids, dtype=np.float32), min(params.nprobe, nlist))
    from concurrent.futures import ThreadPoolExecutor

    from threadpoolctl import threadpool_limits

    from tunegate.core.progress import progress

    sims = np.full((n, k), -np.inf, dtype=np.float32)
    ids = np.full((n, k), -1, dtype=np.int64)

    def join(cell: int) -> int:
        members = order[bounds[cell]:bounds[cell + 1]]
        if len(members) == 0:
            return 0
        cand = np.concatenate([order[bounds[j]:bounds[j + 1]] for j in near[cell] if j >= 0])
        cand_vectors = vectors[cand]
        kc = min(k, len(cand))
        step = max(1, _JOIN_BLOCK // len(cand))  # bounds the score block of a crowded cell
        for lo in range(0, len(members), step):
            rows = members[lo:lo + step]
            scores = vectors[rows] @ cand_vectors.T  # one BLAS product per cell (or block of it)
            top_scores, top = top_k(scores, kc)
            sims[rows, :kc] = top_scores  # cells own disjoint rows
            ids[rows, :kc] = cand[top]
        return len(members)

    # The products are small (a cell's members against its probes' members). Multi-threaded BLAS on them
    # spins more than it computes, and collapses when another process holds a core (12x slower, measured:
    # bench/scale/RESULTS.md); one BLAS thread per cell and the cells spread over the cores instead.
    with progress(f"kNN search over {n:,} vectors", n, "vectors") as tracker, threadpool_limits(1, "blas"), \
            ThreadPoolExecutor(max_workers=usable_cores()) as pool:
        for done in pool.map(join, range(nlist)):
            tracker.update(done)
    return sims, ids


#: Column groups whose maxima bound a row's k-th largest score from below in :func:`top_k`.
_TOP_K_GROUPS = 128


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ``k`` largest scores, largest first, and their columns; equal scores by column.

    ``np.argpartition`` over every score of a row cost 1.7x the matrix product that made them (the IVF
    self-join's per-cell scores, 4,000 columns a row at 1M vectors). Here the columns fall into
    :data:`_TOP_K_GROUPS` strided groups; the k-th largest of the groups' maxima is at most the row's k-th
    largest score (the maxima are ``G`` distinct scores of the row), so the scores at or above it hold the top
    ``k``: a few more than ``k`` a row, sorted alone. The maxima are one vectorised reduction.
    """
    import numpy as np

    m, c = scores.shape
    k = min(k, c)
    groups = _TOP_K_GROUPS
    if c < 2 * groups or k > groups // 4:  # small or wide: the plain partition
        return _top_k_partition(scores, k)
    per_group = c // groups
    maxima = np.maximum.reduce(scores[:, :per_group * groups].reshape(m, per_group, groups), axis=1)
    bound = np.partition(maxima, groups - k, axis=1)[:, groups - k]
    at = np.flatnonzero(scores >= bound[:, None])
    row, col = np.divmod(at, c)
    if len(at) < m * k or np.bincount(row, minlength=m).min() < k:  # NaN scores compare False
        return _top_k_partition(scores, k)
    value = scores.ravel()[at]
    order = np.lexsort((col, -value, row))
    row, col, value = row[order], col[order], value[order]
    rank = np.arange(len(row)) - np.searchsorted(row, row)
    keep = rank < k
    out_scores = np.empty((m, k), dtype=scores.dtype)
    out_cols = np.empty((m, k), dtype=np.int64)
    out_scores[row[keep], rank[keep]] = value[keep]
    out_cols[row[keep], rank[keep]] = col[keep]
    return out_scores, out_cols


def _top_k_partition(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`top_k` by a partition of every row (its reference, and the path for narrow rows)."""
    import numpy as np

    m, c = scores.shape
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k] if k < c else np.broadcast_to(np.arange(c), (m, c))
    top_scores = np.take_along_axis(scores, top, axis=1)
    rank = np.lexsort((top, -top_scores), axis=1)
    return np.take_along_axis(top_scores, rank, axis=1), np.take_along_axis(top, rank, axis=1)


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, e.g. a container's or a Celery worker's share)."""
    import os

    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def all_vectors(index: Any) -> np.ndarray:
    """Every vector an index holds, in position order (flat or IVF-Flat)."""
    import faiss
    import numpy as np

    n, d = index.ntotal, index.d
    if n == 0:
        return np.zeros((0, d), dtype=np.float32)
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        ivf.make_direct_map()
    return np.asarray(index.reconstruct_n(0, n), dtype=np.float32).reshape(n, d)
