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


@pytest.mark.parametrize(("k", "nprobe"), [(1, 1), (10, 8), (30, 4)])
def test_the_cell_by_cell_ivf_search_is_faiss_s_search(k: int, nprobe: int) -> None:
    """Same probes, same candidates, same scores as FAISS's per-query scan; positions differ only among equal
    scores (exact copies in the index)."""
    import faiss

    from tunegate.core import vector_index as vi

    rng = np.random.default_rng(4)
    centres = rng.standard_normal((40, 32)).astype(np.float32)
    data = centres[rng.integers(0, 40, 6000)] + 0.4 * rng.standard_normal((6000, 32)).astype(np.float32)
    data[5000:5100] = data[:100]  # exact copies: equal scores
    data /= np.linalg.norm(data, axis=1, keepdims=True)
    queries = np.concatenate([data[:1500] + 0.05 * rng.standard_normal((1500, 32)).astype(np.float32), data[:20]])
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    index = vi.build_index(data, vi.IndexParams(flat_max=100, nlist=60))
    assert vi.index_kind(index) == "ivf" and len(queries) >= vi._BLOCKED_MIN_QUERIES
    read_back = faiss.deserialize_index(faiss.serialize_index(index))  # as the history loads it
    for ivf in (index, read_back):
        assert vi._array_lists(faiss.extract_index_ivf(ivf))  # so the search below is the cell-by-cell one
    sims, ids = vi.search(index, queries, k, nprobe)  # cell by cell
    faiss.extract_index_ivf(index).nprobe = nprobe
    ref_sims, ref_ids = index.search(np.ascontiguousarray(queries), k)  # FAISS, query by query
    np.testing.assert_allclose(sims, ref_sims, atol=1e-5)
    differ = ids != ref_ids
    assert np.isclose(sims[differ], ref_sims[differ], atol=1e-5).all()  # only where the scores tie
    for row in np.flatnonzero(differ.any(axis=1)):  # and the tied positions hold the same vectors' scores
        assert np.allclose(np.sort(data[ids[row]] @ queries[row]), np.sort(data[ref_ids[row]] @ queries[row]),
                           atol=1e-5)
    tied = (sims[:, 1:] == sims[:, :-1]) & (ids[:, 1:] >= 0)
    assert (ids[:, 1:][tied] > ids[:, :-1][tied]).all()  # equal scores: the earlier position first
    assert k == 1 or tied[-20:].any()  # (the last queries are copies of indexed vectors that are there twice)


def test_an_ivf_index_with_fewer_vectors_than_k_pads_like_faiss() -> None:
    from tunegate.core import vector_index as vi

    rng = np.random.default_rng(5)
    data = rng.standard_normal((200, 8)).astype(np.float32)
    data /= np.linalg.norm(data, axis=1, keepdims=True)
    index = vi.build_index(data, vi.IndexParams(flat_max=10, nlist=4))
    queries = np.repeat(data[:1], vi._BLOCKED_MIN_QUERIES, axis=0)
    sims, ids = vi.search(index, queries, 300, nprobe=1)  # one cell probed: fewer than 300 candidates
    found = ids[0] >= 0
    assert 0 < found.sum() < 300 and (ids[:, ~found] == -1).all() and np.isneginf(sims[:, ~found]).all()
    assert ids[0, 0] == 0 and sims[0, 0] == pytest.approx(1.0, abs=1e-5)
