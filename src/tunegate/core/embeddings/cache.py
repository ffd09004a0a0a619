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
        parts = self._parts()
        if len(parts) < 2:
            return
        name = f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"
        _merge(parts, self.dir / f"{name}.keys.npy")
        for p in parts:
            p.unlink(missing_ok=True)
            _vecs_path(p).unlink(missing_ok=True)


def gather(sources: list[EmbeddingCache], target: EmbeddingCache, *, name: str) -> int:
    """The vectors of every ``sources`` cache as one part of ``target`` named ``part-<name>`` (keys unique, the first
    source's vector kept); a part of that name is replaced, so gathering again adds nothing. Returns the count."""
    parts = [part for source in sources for part in source._parts()]
    if not parts:
        return 0
    target.dir.mkdir(parents=True, exist_ok=True)
    spec_file = target.dir / "spec.json"
    if not spec_file.exists():
        from tunegate.core.io import write_json_atomic

        write_json_atomic(spec_file, target.spec.to_json())
    return _merge(parts, target.dir / f"part-{name}.keys.npy")


#: Rows of the merged vectors gathered and written at a time (64 MB at dim 256).
_MERGE_ROWS = 65_536


def _merge(parts: list[Path], keys_path: Path) -> int:
    """Write the parts as one part (``keys_path`` and its vectors): each key once, with the vector of its first
    part in the given order. Returns the keys written.

    Memory is bounded by the keys (32 bytes each) and one block of :data:`_MERGE_ROWS` vectors: the vectors are
    gathered block by block from the parts, memory-mapped one block at a time, and appended to the file. (Loading
    every part at once held the whole cache twice: at a million records 2 GB, the peak of the night.)"""
    import numpy as np

    from tunegate.core.io import atomic_write

    keys_of = [np.load(p) for p in parts]
    offsets = np.zeros(len(parts) + 1, dtype=np.int64)
    np.cumsum([len(k) for k in keys_of], out=offsets[1:])
    keys, first = np.unique(np.concatenate(keys_of) if keys_of else np.zeros(0, "S32"), return_index=True)
    del keys_of
    dim = next((np.load(_vecs_path(p), mmap_mode="r").shape[1] for p in parts), 0)
    part_of = np.searchsorted(offsets, first, side="right") - 1
    with atomic_write(_vecs_path(keys_path)) as tmp, open(tmp, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)),
                                                 "fortran_order": False, "shape": (len(keys), dim)})
        for start in range(0, len(keys), _MERGE_ROWS):
            src, owner = first[start:start + _MERGE_ROWS], part_of[start:start + _MERGE_ROWS]
            block = np.empty((len(src), dim), dtype=np.float32)
            for i in np.unique(owner).tolist():
                vecs = np.load(_vecs_path(parts[i]), mmap_mode="r")
                mine = owner == i
                block[mine] = vecs[src[mine] - offsets[i]]
                del vecs  # unmapped: the pages read leave the process
            f.write(block.tobytes())
    _save_npy(keys_path, keys)  # keys last: a part without them is ignored
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
