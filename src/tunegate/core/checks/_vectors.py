"""What the embedding checks share: embedding options, the batch's vectors, its kNN graph, the history."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunegate.core.checks.base import CanonicalBatch, Check
from tunegate.core.embeddings import EmbeddingSpec, embed_table
from tunegate.core.vector_index import FLAT_MAX, HISTORY_NPROBE, NPROBE, IndexParams
from tunegate.exceptions import ConfigError

if TYPE_CHECKING:
    import numpy as np

    from tunegate.core.history import History

log = logging.getLogger(__name__)

#: Scratch folder in the work directory: embeddings and kNN graphs shared by the checks of one run.
WORK_CACHE = "embeddings"


class EmbeddingCheck(Check):
    """Base of the checks that embed records. Options are keyword-only and validated here.

    ``embedding``: backend name (``hashing``, ``minilm``, ``static``); ``fields``: what is embedded
    (``instruction+input+output``, ``instruction+input``, ``output``...); ``cache_dir``: a persistent
    embedding cache shared across runs (default: the work directory, so the checks of one run share
    vectors); ``history_dir``: the persisted history (see :mod:`tunegate.core.history`); ``flat_max``
    and ``nprobe``: index choice (see :mod:`tunegate.core.vector_index`).
    """

    def __init__(self, *, embedding: str = "hashing", fields: str = "instruction+input+output", dim: int = 256,
                 max_chars: int = 2000, model_path: str | None = None, cache_dir: str | None = None,
                 history_dir: str | None = None, flat_max: int = FLAT_MAX, nprobe: int = NPROBE,
                 history_nprobe: int = HISTORY_NPROBE, verify_history: bool = True,
                 batch_id: str | None = None) -> None:
        self.spec = EmbeddingSpec(backend=embedding, fields=fields, dim=dim, max_chars=max_chars,  # type: ignore[arg-type]
                                  model_path=model_path)
        self.params = IndexParams(flat_max=flat_max, nprobe=nprobe, history_nprobe=history_nprobe)
        self.cache_dir = cache_dir
        self.history_dir = history_dir
        self.verify_history = bool(verify_history)
        self.batch_id = batch_id  # on a rerun, this batch's earlier contribution is hidden from history searches
        for name, value in (("cache_dir", cache_dir), ("history_dir", history_dir)):
            if value is not None and not isinstance(value, (str, Path)):
                raise ConfigError(f"check {self.name!r}: {name} must be a path, got {value!r}")

    def vectors(self, batch: CanonicalBatch) -> np.ndarray:
        cache = self.cache_dir if self.cache_dir is not None else batch.work_dir / WORK_CACHE
        return embed_table(batch, self.spec, cache_dir=cache)

    def open_history(self, path: str | Path) -> History:
        from tunegate.core.history import open_history

        history = open_history(path, verify=self.verify_history).without_batch(self.batch_id)
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
        sims, ids = history.search(vectors, k, self.params.history_nprobe)
        _save_arrays(path, sims=sims, ids=ids)
        return sims, ids

    def options(self) -> dict[str, Any]:
        return {"embedding": self.spec.to_json(), "flat_max": self.params.flat_max, "nprobe": self.params.nprobe,
                "history_nprobe": self.params.history_nprobe}


def _save_arrays(path: Path, **arrays: Any) -> None:
    import numpy as np

    from tunegate.core.io import atomic_write

    with atomic_write(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)
