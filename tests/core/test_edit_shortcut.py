"""The verification's shortcut (too few common words for an edit) gives the verdict the full alignment gives."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tunegate.core.checks import _edits
from tunegate.core.checks._edits import field_difference, field_words
from tunegate.core.checks._templates import TemplateIndex


def both(a: tuple[str, ...], b: tuple[str, ...], monkeypatch: pytest.MonkeyPatch, **options: Any
         ) -> tuple[str | None, str | None]:
    fast = field_difference(a, b, **options)
    with monkeypatch.context() as m:
        m.setattr(_edits, "_common_words", lambda x, y: max(len(x), len(y)))  # never short-cut
        slow = field_difference(a, b, **options)
    return fast, slow


VOCAB = ["the", "a", "cat", "sat", "on", "mat", "review", "great", "bad", "movie", "is", "was", "2016", "of"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(VOCAB), max_size=60), st.lists(st.sampled_from(VOCAB), max_size=60),
       st.booleans(), st.booleans())
def test_same_verdict_on_any_word_sequences(a: list[str], b: list[str], answer: bool, lenient: bool) -> None:
    with pytest.MonkeyPatch.context() as monkeypatch:
        fast, slow = both(tuple(a), tuple(b), monkeypatch, answer=answer, lenient=lenient)
    assert fast == slow


def test_same_verdict_on_real_neighbours(superni_slice: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    # records of one task share a template: their inputs and outputs are the pairs verification meets
    templates = TemplateIndex()
    fields = [tuple(field_words(r[f], 20_000) for f in ("instruction", "input", "output")) for r in superni_slice]
    for words in fields:
        templates.add(words)
    rng = random.Random(0)
    shortcut = 0
    for _ in range(400):
        i, j = rng.randrange(len(fields)), rng.randrange(len(fields))
        for k, answer in ((1, False), (2, True), (0, False)):
            fast, slow = both(fields[i][k], fields[j][k], monkeypatch, answer=answer,
                              is_wrapper=templates.is_wrapper)
            assert fast == slow
            shortcut += fast == "mostly different words"
    assert shortcut > 100  # the shortcut was taken (and agreed), not just the full path
