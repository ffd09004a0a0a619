"""Bottom-k sketches of record content: how many *distinct* records several nights hold.

The history keeps counts summed over nights (phrase statistics, refusal counts). A pipeline that publishes the same
record on several nights (a source re-sent whole, a history whose near-duplicate check is off) would have that record
counted as several observations, and the baselines drawn from the sums would be narrower than what the history
knows. A night therefore also keeps a sketch of the records it counted: the ``SKETCH_SIZE`` smallest of their 64-bit
content keys (the first 8 bytes of ``content_sha256``). The union of several nights' sketches estimates the distinct
records they hold (Bar-Yossef et al. 2002, the ``k``-th minimum value estimator): exactly while the union holds fewer
than ``SKETCH_SIZE`` keys, else to about ``1/sqrt(k)`` (3% at 1,024).

Pure numpy; :func:`encode_sketch` / :func:`decode_sketch` carry a sketch in JSON (the history manifest) as base64.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

#: Keys a sketch keeps: a union's distinct count is estimated to ~1/sqrt(k) (3%), and is exact below it.
SKETCH_SIZE = 1024
#: Summed counts are scaled to the distinct records only when these are fewer than this share of them:
#: repetition under 10% is within the sketch's error and changes no baseline materially.
MIN_REPEAT = 0.9


def content_keys(digests: Iterable[str]) -> np.ndarray:
    """Records' 64-bit content keys: the first 8 bytes of each ``content_sha256`` (hex), as signed integers."""
    import numpy as np

    items = list(digests)
    return np.fromiter((int(d[:16], 16) for d in items), dtype=np.uint64, count=len(items)).view(np.int64)


def bottom_k(keys: np.ndarray, size: int = SKETCH_SIZE) -> np.ndarray:
    """The ``size`` smallest distinct keys, ordered as unsigned 64-bit values (signed int64 storage)."""
    import numpy as np

    unsigned = np.unique(np.asarray(keys, dtype=np.int64).view(np.uint64))[:size]
    return unsigned.view(np.int64)


def distinct_count(sketches: list[np.ndarray], size: int = SKETCH_SIZE) -> float:
    """Distinct records of the union of several sketches: exact when the union holds fewer than ``size`` keys
    (every sketch was all its records), else the bottom-k estimate ``(k - 1) / u_k`` (``u_k``: the k-th smallest
    key as a fraction of the 64-bit range)."""
    import numpy as np

    if not sketches:
        return 0.0
    union = np.unique(np.concatenate([np.asarray(s, dtype=np.int64) for s in sketches]).view(np.uint64))
    if len(union) < size:
        return float(len(union))
    kth = float(union[size - 1]) + 1.0
    return (size - 1) / (kth / 2.0**64)


def encode_sketch(sketch: np.ndarray) -> str:
    """A sketch as base64 of its little-endian 64-bit keys (1,024 keys: 11 KB of JSON)."""
    import numpy as np

    return base64.b64encode(np.asarray(sketch, dtype="<i8").tobytes()).decode("ascii")


def decode_sketch(text: str) -> np.ndarray:
    """:func:`encode_sketch` reversed; ``ValueError`` for text that is not one."""
    import binascii

    import numpy as np

    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise ValueError(f"not a content sketch: {exc}") from exc
    if len(raw) % 8:
        raise ValueError(f"not a content sketch: {len(raw)} bytes is not a whole number of 64-bit keys")
    return np.frombuffer(raw, dtype="<i8").astype(np.int64)
