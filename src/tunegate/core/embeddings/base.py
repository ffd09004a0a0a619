"""The interface every backend implements: records in, L2-normalized float32 vectors out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    import numpy as np

    from tunegate.core.embeddings.spec import EmbeddingSpec


class Embedder(ABC):
    """Turns the chosen text fields of records into L2-normalized float32 vectors of :attr:`dim`.

    Whatever the backend, the cosine of two records is the mean of their per-field cosines (each field
    weighted equally); how a backend gets there is its own business (the hashing backend weights its
    sketches, the model backends concatenate per-field unit vectors).
    """

    backend: ClassVar[str]
    #: Whether :meth:`embed` may run in several threads at once (then a table is embedded on every core).
    thread_safe: ClassVar[bool] = False

    def __init__(self, spec: EmbeddingSpec) -> None:
        self.spec = spec

    @property
    @abstractmethod
    def dim(self) -> int: ...

    @abstractmethod
    def embed(self, records: Mapping[str, Sequence[str]]) -> np.ndarray:
        """Vectors for records given as ``{field: texts}`` (every field of the spec, same length)."""


def normalize_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (all-zero rows stay zero), as float32."""
    import numpy as np

    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1).astype(np.float32)
