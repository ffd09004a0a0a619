"""The poison scans' n-gram matrix equals scikit-learn's CountVectorizer, column for column and record for record."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.feature_extraction.text import CountVectorizer

from tunegate.core.checks.poison import _ngrams
from tunegate.core.checks.poison._text import TOKEN_PATTERN, ngram_matrix


def reference(texts: list[str], ngram_max: int, **options: Any) -> tuple[Any, list[str]]:
    vec = CountVectorizer(token_pattern=TOKEN_PATTERN, ngram_range=(1, ngram_max), binary=True, dtype=np.float32,
                          **options)
    try:
        x = vec.fit_transform(texts) if "vocabulary" not in options else vec.transform(texts)
    except ValueError:  # nothing left after the cut
        return None, []
    return x.tocsr(), list(vec.get_feature_names_out())


def assert_equal(texts: list[str], ngram_max: int, **options: Any) -> None:
    ours = {"min_df": 1} | options
    x, vocab = ngram_matrix(texts, ngram_max=ngram_max, **ours)
    y, names = reference(texts, ngram_max, **(options if "vocabulary" in options else ours))
    if y is None:
        assert x.shape == (len(texts), 0) and len(vocab) == 0
        return
    assert list(vocab) == names
    assert x.shape == y.shape
    assert (x != y).nnz == 0
    assert set(np.unique(x.data).tolist()) <= {1.0}


@pytest.mark.parametrize("options", [
    {"min_df": 5, "max_df": 0.1},  # the trigger scan's cut
    {"min_df": 2, "max_df": 40},  # an integer max_df is a count
    {"min_df": 0.001},  # a share of the records
    {"min_df": 3, "max_df": 2},  # max below min: nothing is left
])
def test_equals_countvectorizer_on_real_records(superni_slice: list[dict[str, Any]], options: dict[str, Any]) -> None:
    texts = [f"{r['instruction']}\n{r['input']}" for r in superni_slice]
    assert_equal(texts, 2, **options)


def test_unigrams_and_a_given_vocabulary(superni_slice: list[dict[str, Any]]) -> None:
    texts = [r["output"] for r in superni_slice]
    assert_equal(texts, 1, min_df=2)
    _, names = reference(texts, 2, min_df=3)
    vocabulary = [*names[::7], "never seen", "three word phrase", "x"]
    assert_equal([r["input"] for r in superni_slice], 2, vocabulary=vocabulary)


def test_chunk_boundaries_and_empty_records(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_ngrams, "CHUNK_RECORDS", 3)
    texts = ["", "a b", "   ", "a b c", "b c", "!!", "a", "c a b", ""]
    assert_equal(texts, 2, min_df=2)
    assert_equal(texts, 2, vocabulary=["a b", "c", "b c a"])


words = st.text(alphabet=st.characters(codec="utf-8", categories=("L", "N", "P", "Zs", "S", "M", "Pc")),
                max_size=12)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(words, max_size=8).map(" ".join), min_size=1, max_size=30), st.integers(1, 3))
def test_equals_countvectorizer_on_any_text(texts: list[str], min_df: int) -> None:
    # any script, case folding that changes lengths ("İ"), digits, underscores, marks, symbols, emoji
    assert_equal(texts, 2, min_df=min_df)
