"""tunegate.core.vector_index: the top-k selection of the IVF self-join against a full sort."""

from __future__ import annotations

import numpy as np
import pytest

from tunegate.core.vector_index import _top_k_partition, top_k


def reference(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Every row sorted in full: largest score first, equal scores by column."""
    cols = np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
    order = np.lexsort((cols, -scores), axis=1)[:, :k]
    return np.take_along_axis(scores, order, axis=1), order


@pytest.mark.parametrize("columns", [5, 200, 256, 257, 4_000, 9_731])
@pytest.mark.parametrize("k", [1, 11, 32])
def test_top_k_equals_a_full_sort(columns: int, k: int) -> None:
    rng = np.random.default_rng(columns * 100 + k)
    scores = rng.standard_normal((300, columns)).astype(np.float32)
    got_scores, got_cols = top_k(scores, k)
    want_scores, want_cols = reference(scores, min(k, columns))
    np.testing.assert_array_equal(got_scores, want_scores)
    np.testing.assert_array_equal(got_cols, want_cols)


def test_ties_are_taken_by_column_like_exact_copies() -> None:
    # scores of a cell full of exact copies: many equal maxima, and rows whose top k all tie
    rng = np.random.default_rng(7)
    scores = np.round(rng.random((200, 3_000)), 1).astype(np.float32)
    scores[:50, :40] = 1.0
    got_scores, got_cols = top_k(scores, 11)
    want_scores, want_cols = reference(scores, 11)
    np.testing.assert_array_equal(got_scores, want_scores)
    np.testing.assert_array_equal(got_cols, want_cols)
    assert (got_cols[:50] == np.arange(11)).all()


def test_nan_rows_fall_back_to_the_partition() -> None:
    rng = np.random.default_rng(3)
    scores = rng.standard_normal((20, 1_000)).astype(np.float32)
    scores[4] = np.nan
    got_scores, got_cols = top_k(scores, 5)
    want_cols = _top_k_partition(scores, 5)[1]
    np.testing.assert_array_equal(got_cols[np.arange(20) != 4], want_cols[np.arange(20) != 4])
    assert got_scores.shape == (20, 5) and np.isnan(got_scores[4]).all()
