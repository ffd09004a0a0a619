"""Vectors kept by ``content_sha256``, per embedding configuration, so a record is embedded once, ever."""

from __future__ import annotations

import logging
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

    from tunegate.core.embeddings.spec import EmbeddingSpec

log = logging.getLogger(__name__)

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


def gather(sources: list[EmbeddingCache], target: EmbeddingCache, *, name: str) -> int:
    """The vectors of every ``sources`` cache as one part of ``target`` named ``part-<name>`` (keys unique, the first
    source's vector kept); a part of that name is replaced, so gathering again adds nothing. Returns the count."""
    import numpy as np

    keys_parts, vec_parts = [], []
    for source in sources:
        for part in source._parts():
            keys_parts.append(np.load(part))
            vec_parts.append(np.load(_vecs_path(part)))
    if not keys_parts:
        return 0
    keys, first = np.unique(np.concatenate(keys_parts), return_index=True)
    target.dir.mkdir(parents=True, exist_ok=True)
    spec_file = target.dir / "spec.json"
    if not spec_file.exists():
        from tunegate.core.io import write_json_atomic

        write_json_atomic(spec_file, target.spec.to_json())
    _save_npy(target.dir / f"part-{name}.vecs.npy", np.concatenate(vec_parts)[first])
    _save_npy(target.dir / f"part-{name}.keys.npy", keys)  # keys last: a part without them is ignored
    return len(keys)


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
