"""The poison scans' n-gram matrix equals scikit-learn's CountVectorizer, column for column and record for record."""

from __future__ import annotations

import itertools
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


@pytest.mark.parametrize("chunk", [4, _ngrams.CHUNK_RECORDS])
def test_word_statistics_are_the_batch_s_own(superni_slice: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch,
                                            chunk: int) -> None:
    # what the insertion test reads: each word's document frequency, how many texts start and end with it, and the
    # document frequency of each bigram of frequent words held by 2+ texts; counted here from each text's words
    import re
    from collections import Counter

    monkeypatch.setattr(_ngrams, "CHUNK_RECORDS", chunk)
    texts = [r["input"] for r in superni_slice[:400]] + ["", "!!"]
    stats = _ngrams.WordStats()
    _ngrams.ngram_matrix(texts, pattern=TOKEN_PATTERN, min_df=3, stats=stats)
    assert stats.words is not None and stats.word_df is not None and stats.bigram_keys is not None
    names = stats.words.names()
    tokens = [re.findall(TOKEN_PATTERN, t.lower()) for t in texts]
    df = Counter(w for ws in tokens for w in set(ws))
    assert stats.texts == len(texts)
    assert {w: int(stats.word_df[i]) for i, w in enumerate(names)} == dict(df)
    starts = Counter(ws[0] for ws in tokens if ws)
    ends = Counter(ws[-1] for ws in tokens if ws)
    assert {w: int(stats.starts[i]) for i, w in enumerate(names) if stats.starts[i]} == starts
    assert {w: int(stats.ends[i]) for i, w in enumerate(names) if stats.ends[i]} == ends
    bigram_df = Counter(b for ws in tokens for b in {(p, q) for p, q in itertools.pairwise(ws) if df[p] >= 3 <= df[q]})
    shift = _ngrams._SHIFT
    got = {(names[(k >> shift) - 1], names[k & ((1 << shift) - 1)]): int(n)
           for k, n in zip(stats.bigram_keys.tolist(), stats.bigram_df.tolist(), strict=True)}
    assert got == {b: n for b, n in bigram_df.items() if n >= 2}
