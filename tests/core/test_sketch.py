"""Bottom-k content sketches: what the history keeps so that a record counted on several nights counts once."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tunegate.core.schema import content_sha256
from tunegate.core.sketch import SKETCH_SIZE, bottom_k, content_keys, decode_sketch, distinct_count, encode_sketch


def test_a_sketch_survives_json_and_garbage_is_refused() -> None:
    keys = content_keys([content_sha256(f"instruction {i}", "", f"output {i}", None) for i in range(3000)])
    sketch = bottom_k(keys)
    assert len(sketch) == SKETCH_SIZE and np.all(np.diff(sketch.view(np.uint64).astype(np.float64)) > 0)
    carried = json.loads(json.dumps({"s": encode_sketch(sketch)}))["s"]
    assert np.array_equal(decode_sketch(carried), sketch)
    assert len(carried) < 11_000  # what one night adds to the history manifest
    assert decode_sketch(encode_sketch(bottom_k(keys[:0]))).size == 0
    for bad in ("not base64!", "AAAA"):  # not base64; 3 bytes, not whole 64-bit keys
        with pytest.raises(ValueError, match="not a content sketch"):
            decode_sketch(bad)


def test_the_same_records_in_any_order_and_number_give_the_same_sketch() -> None:
    rng = np.random.default_rng(11)
    keys = rng.integers(-2**63, 2**63 - 1, size=5000, dtype=np.int64)
    assert np.array_equal(bottom_k(keys), bottom_k(np.concatenate([keys[::-1], keys[:100]])))
    assert distinct_count([bottom_k(keys)] * 5) == distinct_count([bottom_k(keys)])
    assert distinct_count([bottom_k(keys[:10])]) == 10.0  # exact below the sketch
