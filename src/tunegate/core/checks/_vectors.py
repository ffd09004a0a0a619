"""What the embedding checks share: embedding options, the batch's vectors, its kNN graph, the history."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from tunegate.core.checks.base import CanonicalBatch, Check
from tunegate.core.checks.config import CheckConfig, boolean, integer, optional_path
from tunegate.core.embeddings import EmbeddingSpec, embed_table
from tunegate.core.vector_index import FLAT_MAX, HISTORY_NPROBE, NPROBE, IndexParams
from tunegate.exceptions import ConfigError

if TYPE_CHECKING:
    import numpy as np

    from tunegate.core.history import History

log = logging.getLogger(__name__)

#: Scratch folder in the work directory: embeddings and kNN graphs shared by the checks of one run.
WORK_CACHE = "embeddings"


@dataclass(frozen=True)
class EmbeddingConfig(CheckConfig):
    """Options every embedding check shares: what is embedded and how, the caches, the history, the index.

    ``embedding``: backend name (``hashing``, ``minilm``, ``static``); ``fields``: what is embedded
    (``instruction+input+output``, ``instruction+input``, ``output``...); ``dim``, ``max_chars``,
    ``model_path``: see :class:`tunegate.core.embeddings.EmbeddingSpec`; ``cache_dir``: a persistent
    embedding cache shared across runs (default: the work directory, so the checks of one run share
    vectors); ``history_dir``: the persisted history (see :mod:`tunegate.core.history`); ``flat_max``,
    ``nprobe``, ``history_nprobe``: index choice and search (see :mod:`tunegate.core.vector_index`);
    ``verify_history``: check the history's files against their sha256 on load; ``batch_id``: on a rerun,
    this batch's earlier contribution is hidden from history searches. ``history_dir`` and ``batch_id``
    are set per run, never by the policy file.
    """

    check: ClassVar[str] = "embedding check"

    embedding: str = "hashing"
    fields: str = "instruction+input+output"
    dim: int = 256
    max_chars: int = 2000
    model_path: str | None = None
    cache_dir: str | None = None
    history_dir: str | None = None
    flat_max: int = FLAT_MAX
    nprobe: int = NPROBE
    history_nprobe: int = HISTORY_NPROBE
    verify_history: bool = True
    batch_id: str | None = None

    def __post_init__(self) -> None:
        integer(self, "dim", minimum=16, maximum=4096)
        integer(self, "max_chars", minimum=16)
        for name in ("model_path", "cache_dir", "history_dir"):
            optional_path(self, name)
        integer(self, "flat_max", minimum=0)
        integer(self, "nprobe", minimum=1)
        integer(self, "history_nprobe", minimum=1)
        boolean(self, "verify_history")
        self.spec()  # backend, fields and model_path: what EmbeddingSpec accepts

    def spec(self) -> EmbeddingSpec:
        try:
            return EmbeddingSpec(backend=self.embedding, fields=self.fields,  # type: ignore[arg-type]
                                 dim=self.dim, max_chars=self.max_chars, model_path=self.model_path)
        except ConfigError as exc:
            raise ConfigError(f"{self.check} {exc}") from None

    def index_params(self) -> IndexParams:
        return IndexParams(flat_max=self.flat_max, nprobe=self.nprobe, history_nprobe=self.history_nprobe)


class EmbeddingCheck(Check):
    """Base of the checks that embed records; options: an :class:`EmbeddingConfig` (subclass)."""

    config_class: ClassVar[type[CheckConfig]] = EmbeddingConfig
    config: EmbeddingConfig
    lane: ClassVar[str | None] = "vectors"  # one vectors cache and kNN graph, computed once, shared in order

    @cached_property
    def spec(self) -> EmbeddingSpec:
        return self.config.spec()

    @cached_property
    def params(self) -> IndexParams:
        return self.config.index_params()

    @property
    def cache_dir(self) -> str | None:
        return self.config.cache_dir

    @property
    def history_dir(self) -> str | None:
        return self.config.history_dir

    def vectors(self, batch: CanonicalBatch) -> np.ndarray:
        cache = self.cache_dir if self.cache_dir is not None else batch.work_dir / WORK_CACHE
        return embed_table(batch, self.spec, cache_dir=cache)

    def open_history(self, path: str | Path) -> History:
        from tunegate.core.history import open_history

        history = open_history(path, verify=self.config.verify_history).without_batch(self.config.batch_id)
        history.check_spec(self.spec)
        return history

    def batch_knn(self, batch: CanonicalBatch, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, str]:
        """The batch's own kNN graph (self excluded), kept in the work directory for the other checks."""
        import numpy as np

        from tunegate.core.vector_index import self_knn

        stat = batch.path.stat()
        name = (f"knn-{self.spec.fingerprint()}-k{k}-f{self.params.flat_max}-p{self.params.nprobe}-"
                f"{batch.num_rows}-{stat.st_size}-{stat.st_mtime_ns}.npz")
        path = batch.work_dir / WORK_CACHE / name
        if path.is_file():
            with np.load(path) as data:
                return data["sims"], data["ids"], str(data["kind"])
        sims, ids, kind = self_knn(vectors, k, self.params)
        _save_arrays(path, sims=sims, ids=ids, kind=np.array(kind))
        return sims, ids, kind

    def history_knn(self, batch: CanonicalBatch, vectors: np.ndarray, history: History, k: int
                    ) -> tuple[np.ndarray, np.ndarray]:
        """The batch's ``k`` nearest history records, kept in the work directory for the other checks
        (near_duplicate needs the first, embedding_outlier all ``k``: one search serves both)."""
        import numpy as np

        stat = batch.path.stat()
        name = (f"hknn-{self.spec.fingerprint()}-k{k}-p{self.params.history_nprobe}-"
                f"g{history.manifest.get('generation')}-"
                f"{history.count}-{batch.num_rows}-{stat.st_size}-{stat.st_mtime_ns}.npz")
        path = batch.work_dir / WORK_CACHE / name
        if path.is_file():
            with np.load(path) as data:
                return data["sims"], data["ids"]
        import time

        started = time.perf_counter()
        sims, ids = history.search(vectors, k, self.params.history_nprobe)
        log.info("history search: %d records against %d history records (%s, k=%d) in %.1f s", len(vectors),
                 history.count, history.kind, k, time.perf_counter() - started)
        _save_arrays(path, sims=sims, ids=ids)
        return sims, ids

    def options(self) -> dict[str, Any]:
        return {"embedding": self.spec.to_json(), "flat_max": self.params.flat_max, "nprobe": self.params.nprobe,
                "history_nprobe": self.params.history_nprobe}


def score_histogram(values: np.ndarray, *, low: float, high: float, bins: int) -> dict[str, Any]:
    """A small histogram for the report (``edges``, ``counts``); values outside ``[low, high]`` are counted in
    the first or last bin, and non-finite ones are left out."""
    import numpy as np

    finite = np.asarray(values, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    edges = np.linspace(low, high, bins + 1)
    counts, _ = np.histogram(np.clip(finite, low, high), bins=edges)
    return {"edges": [round(float(e), 4) for e in edges], "counts": [int(c) for c in counts]}


def _save_arrays(path: Path, **arrays: Any) -> None:
    import numpy as np

    from tunegate.core.io import atomic_write

    with atomic_write(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)
