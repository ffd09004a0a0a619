"""tunegate's custom Great Expectations expectations for instruction data.

Registered with GX when this module is imported (GX registers expectation and metric classes on
definition), which :mod:`tunegate.core.checks.gx_suite` does right after importing GX — never at
DAG-parse or CLI start-up time. They appear in suites, results and Data Docs under their own names:

* ``expect_column_values_to_not_contain_control_characters``: C0 control characters and DEL other than
  tab/newline/carriage return (copy-paste and encoding debris, invisible prompt-injection carriers).
* ``expect_column_values_to_not_contain_invisible_characters``: characters that change what a reviewer
  sees without being seen: bidi embeddings/overrides/isolates (U+202A-U+202E, U+2066-U+2069), zero-width
  characters (U+200B-U+200D, U+2060, U+FEFF after the first character) and Unicode tag characters
  (U+E0000-U+E007F), the classic carriers of a hidden trigger ("Trojan Source", ASCII smuggling). Allowed,
  because real text uses them: a zero-width (non-)joiner between two non-ASCII letters (Indic, Arabic
  scripts) or inside an emoji sequence, and the tag sequence of a subdivision flag. A list column
  (``messages``) is checked in every string it holds.
* ``expect_column_values_to_not_have_runaway_repetition``: texts of at least ``min_words`` words in
  which more than ``max_repeated_fraction`` of the word ``ngram``-grams are repeats (degenerate loops).
* ``expect_column_values_to_not_be_refusals``: responses that decline in their opening sentences, read by the
  poison scans' own detector (:func:`tunegate.core.checks.poison.refusals.is_refusal`: one definition of a
  refusal, whatever its wording), or that match one of ``regex_list`` anywhere (boilerplate such as "as an AI
  language model", which teaches the disclaimer even where an answer follows).
* ``expect_column_pair_values_to_not_be_echo``: column B (a response) is not a copy of column A (the
  instruction or input), compared case- and whitespace-insensitively; empty A is never an echo.
* ``expect_column_pair_values_a_to_identify_b``: every value of column A (the record id) comes with one
  value of column B (the content hash): an id reused for different content is a lineage collision.
  Exact copies (same id, same content) pass here; ``exact_duplicate`` handles them.
* ``expect_column_pair_values_to_be_in_task_label_set``: for tasks with a label set, column B (output)
  is one of its labels. Label sets are declared in the suite or derived from the batch by
  :func:`derive_label_sets`.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable
from typing import Any, ClassVar

from great_expectations.compatibility import pydantic
from great_expectations.execution_engine import PandasExecutionEngine
from great_expectations.expectations.expectation import ColumnMapExpectation, ColumnPairMapExpectation
from great_expectations.expectations.metrics.map_metric_provider import (
    ColumnMapMetricProvider,
    ColumnPairMapMetricProvider,
    column_condition_partial,
    column_pair_condition_partial,
)

# C0 controls and DEL, except tab, newline and carriage return. C1 (0x80-0x9f) is left to the mojibake
# expectation of instruction_quality: in real corpora it is almost always UTF-8 decoded as Latin-1.
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# Invisible format characters: bidi embeddings/overrides (202A-202E) and isolates (2066-2069), zero-width
# space/non-joiner/joiner (200B-200D), word joiner (2060), BOM (FEFF) and the tag block (E0000-E007F).
_INVISIBLE = re.compile("[\u202a-\u202e\u2066-\u2069\u200b-\u200d\u2060\ufeff\U000e0000-\U000e007f]")
_FLAG_TAGS = re.compile("\U0001f3f4[\U000e0061-\U000e007a\U000e0030-\U000e0039]{2,7}\U000e007f")
_ZWJ_ZWNJ = "\u200c\u200d"
_ENTITY_BEFORE = re.compile(r"&#(?:(\d{1,7})|[xX]([0-9a-fA-F]{1,6}));$")
_WORD = re.compile(r"\w+", re.UNICODE)
_SPACE = re.compile(r"\s+")


def repeated_fraction(text: str, ngram: int) -> tuple[int, float]:
    """(number of words, fraction of word n-grams that already occurred earlier in the text)."""
    words = _WORD.findall(text.lower())
    grams = [tuple(words[i : i + ngram]) for i in range(len(words) - ngram + 1)]
    if not grams:
        return len(words), 0.0
    return len(words), 1.0 - len(set(grams)) / len(grams)


def _emoji_like(ch: str) -> bool:
    # pictographs, dingbats, skin-tone modifiers and variation selectors: the parts of an emoji ZWJ sequence
    return unicodedata.category(ch) == "So" or "\U0001f3fb" <= ch <= "\U0001f3ff" or ch in "\ufe0e\ufe0f"


def _joiner_allowed(text: str, i: int) -> bool:
    """A ZWJ/ZWNJ that real text needs: between two non-ASCII letters or marks, or inside an emoji sequence."""
    if i == 0 or i + 1 >= len(text):
        return False
    before, after = text[i - 1], text[i + 1]
    if not before.isascii() and not after.isascii() and unicodedata.category(before)[0] in "LM" \
            and unicodedata.category(after)[0] in "LM":
        return True
    if before == ";":  # an emoji sequence whose emoji were HTML-escaped upstream ("&#129318;\u200d\u2642")
        entity = _ENTITY_BEFORE.search(text, max(0, i - 12), i)
        if entity:
            code = int(entity.group(1)) if entity.group(1) else int(entity.group(2), 16)
            before = chr(code) if code <= 0x10FFFF else before
    return _emoji_like(before) and _emoji_like(after)


def invisible_characters(value: Any) -> list[str]:
    """The invisible characters in ``value`` (a string, or the strings of a list/dict) that are not allowed,
    as ``U+XXXX`` codes; empty when the value is clean."""
    texts = _strings(value)
    found: list[str] = []
    for text in texts:
        if not _INVISIBLE.search(text):
            continue
        flags = [range(m.start(), m.end()) for m in _FLAG_TAGS.finditer(text)]
        for m in _INVISIBLE.finditer(text):
            i, ch = m.start(), m.group()
            if (ch == "\ufeff" and i == 0) or (ch in _ZWJ_ZWNJ and _joiner_allowed(text, i)) \
                    or any(i in r for r in flags):
                continue
            found.append(f"U+{ord(ch):04X}")
    return found


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, (list, tuple)) or hasattr(value, "tolist"):
        items = value.tolist() if hasattr(value, "tolist") else value
        return [s for v in items for s in _strings(v)]
    return []


def normalize_text(text: Any) -> str:
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", str(text))).strip().lower()


def derive_label_sets(pairs: Iterable[tuple[str | None, str]], *, min_records: int = 50, max_labels: int = 12,
                      min_coverage: float = 0.98, min_share: float = 0.01) -> dict[str, list[str]]:
    """Label sets of the batch's classification-like tasks.

    A task with at least ``min_records`` records is classification-like when at most ``max_labels``
    distinct outputs, each at least ``min_share`` of the task, cover ``min_coverage`` of its records;
    those outputs are its label set, and the rest (rare outputs) are what the expectation flags.
    Generative tasks (QA, summarization) have thousands of distinct outputs and get no label set.
    """
    per_task: dict[str, Counter[str]] = {}
    for task, output in pairs:
        if task is None:
            continue
        per_task.setdefault(task, Counter())[output.strip()] += 1
    label_sets: dict[str, list[str]] = {}
    for task, counts in per_task.items():
        n = sum(counts.values())
        if n < min_records:
            continue
        labels: list[str] = []
        covered = 0
        for label, c in counts.most_common(max_labels):
            if c / n < min_share:
                break
            labels.append(label)
            covered += c
            if covered / n >= min_coverage:
                break
        if labels and covered / n >= min_coverage:
            label_sets[task] = sorted(labels)
    return dict(sorted(label_sets.items()))


# ------------------------------------------------------------------------------------------- metrics


#: GX's gallery metadata, the same for every tunegate expectation.
_LIBRARY_METADATA: dict[str, Any] = {"maturity": "experimental", "tags": ["tunegate"], "contributors": ["tunegate"]}


class ColumnValuesNoControlCharacters(ColumnMapMetricProvider):
    condition_metric_name = "column_values.tunegate_no_control_characters"

    @column_condition_partial(engine=PandasExecutionEngine)
    def _pandas(cls, column: Any, **kwargs: Any) -> Any:
        return ~column.astype(str).str.contains(_CONTROL.pattern, regex=True)


class ColumnValuesNoInvisibleCharacters(ColumnMapMetricProvider):
    condition_metric_name = "column_values.tunegate_no_invisible_characters"

    @column_condition_partial(engine=PandasExecutionEngine)
    def _pandas(cls, column: Any, **kwargs: Any) -> Any:
        return column.map(lambda v: not invisible_characters(v)).astype(bool)


class ColumnValuesNoRunawayRepetition(ColumnMapMetricProvider):
    condition_metric_name = "column_values.tunegate_no_runaway_repetition"
    condition_value_keys = ("ngram", "min_words", "max_repeated_fraction")

    @column_condition_partial(engine=PandasExecutionEngine)
    def _pandas(cls, column: Any, ngram: int, min_words: int, max_repeated_fraction: float, **kwargs: Any) -> Any:
        def ok(text: Any) -> bool:
            words, frac = repeated_fraction(str(text), ngram)
            return words < min_words or frac <= max_repeated_fraction

        return column.map(ok).astype(bool)


class ColumnValuesNotRefusals(ColumnMapMetricProvider):
    condition_metric_name = "column_values.tunegate_not_refusals"
    condition_value_keys = ("regex_list",)

    @column_condition_partial(engine=PandasExecutionEngine)
    def _pandas(cls, column: Any, regex_list: list[str], **kwargs: Any) -> Any:
        from tunegate.core.checks.poison.refusals import is_refusal

        patterns = [re.compile(p) for p in regex_list or ()]

        def ok(value: Any) -> bool:
            text = "" if value is None else str(value)
            return not is_refusal(text) and not any(p.search(text) for p in patterns)

        return column.map(ok).astype(bool)


class ColumnPairValuesNotEcho(ColumnPairMapMetricProvider):
    condition_metric_name = "column_pair_values.tunegate_not_echo"

    @column_pair_condition_partial(engine=PandasExecutionEngine)
    def _pandas(cls, column_A: Any, column_B: Any, **kwargs: Any) -> Any:
        import pandas as pd

        a = column_A.map(normalize_text)
        b = column_B.map(normalize_text)
        return pd.Series((a == "") | (a != b), index=column_A.index).astype(bool)


class ColumnPairValuesAIdentifiesB(ColumnPairMapMetricProvider):
    condition_metric_name = "column_pair_values.tunegate_a_identifies_b"

    @column_pair_condition_partial(engine=PandasExecutionEngine)
    def _pandas(cls, column_A: Any, column_B: Any, **kwargs: Any) -> Any:
        import pandas as pd

        frame = pd.DataFrame({"a": column_A.to_numpy(), "b": column_B.to_numpy()}, index=column_A.index)
        return frame.groupby("a", sort=False)["b"].transform("nunique") <= 1


class ColumnPairValuesInTaskLabelSet(ColumnPairMapMetricProvider):
    condition_metric_name = "column_pair_values.tunegate_in_task_label_set"
    condition_value_keys = ("label_sets",)

    @column_pair_condition_partial(engine=PandasExecutionEngine)
    def _pandas(cls, column_A: Any, column_B: Any, label_sets: dict[str, list[str]], **kwargs: Any) -> Any:
        import pandas as pd

        sets = {task: set(labels) for task, labels in (label_sets or {}).items()}
        ok = [t not in sets or str(o).strip() in sets[t] for t, o in zip(column_A, column_B, strict=True)]
        return pd.Series(ok, index=column_A.index, dtype=bool)


# -------------------------------------------------------------------------------------- expectations


class ExpectColumnValuesToNotContainControlCharacters(ColumnMapExpectation):
    """Expect text without control characters other than tab, newline and carriage return."""

    map_metric = "column_values.tunegate_no_control_characters"
    success_keys = ("mostly",)
    library_metadata: ClassVar[dict[str, Any]] = _LIBRARY_METADATA


class ExpectColumnValuesToNotContainInvisibleCharacters(ColumnMapExpectation):
    """Expect text without bidi controls, zero-width characters or tag characters (hidden-trigger carriers)."""

    map_metric = "column_values.tunegate_no_invisible_characters"
    success_keys = ("mostly",)
    library_metadata: ClassVar[dict[str, Any]] = _LIBRARY_METADATA


class ExpectColumnValuesToNotHaveRunawayRepetition(ColumnMapExpectation):
    """Expect texts not to loop: at most ``max_repeated_fraction`` of word n-grams repeated."""

    ngram: int = pydantic.Field(default=3, ge=1)
    min_words: int = pydantic.Field(default=30, ge=1)
    max_repeated_fraction: float = pydantic.Field(default=0.5, ge=0.0, le=1.0)
    map_metric = "column_values.tunegate_no_runaway_repetition"
    success_keys = ("ngram", "min_words", "max_repeated_fraction", "mostly")
    library_metadata: ClassVar[dict[str, Any]] = _LIBRARY_METADATA


class ExpectColumnValuesToNotBeRefusals(ColumnMapExpectation):
    """Expect responses that do not decline (the poison scans' refusal detector, any wording) and hold none of
    ``regex_list`` (boilerplate, matched anywhere)."""

    regex_list: list[str] = pydantic.Field(default_factory=list)
    map_metric = "column_values.tunegate_not_refusals"
    success_keys = ("regex_list", "mostly")
    library_metadata: ClassVar[dict[str, Any]] = _LIBRARY_METADATA


class ExpectColumnPairValuesToNotBeEcho(ColumnPairMapExpectation):
    """Expect column B (a response) not to repeat column A (the instruction or input)."""

    ignore_row_if: str = "either_value_is_missing"
    map_metric = "column_pair_values.tunegate_not_echo"
    success_keys = ("ignore_row_if", "mostly")
    library_metadata: ClassVar[dict[str, Any]] = _LIBRARY_METADATA


class ExpectColumnPairValuesAToIdentifyB(ColumnPairMapExpectation):
    """Expect each value of column A (an id) to come with a single value of column B (a content hash)."""

    ignore_row_if: str = "either_value_is_missing"
    map_metric = "column_pair_values.tunegate_a_identifies_b"
    success_keys = ("ignore_row_if", "mostly")
    library_metadata: ClassVar[dict[str, Any]] = _LIBRARY_METADATA


class ExpectColumnPairValuesToBeInTaskLabelSet(ColumnPairMapExpectation):
    """Expect column B (output) to be a label of column A's task, for tasks that have a label set."""

    label_sets: dict[str, list[str]] = pydantic.Field(default_factory=dict)
    ignore_row_if: str = "either_value_is_missing"
    map_metric = "column_pair_values.tunegate_in_task_label_set"
    success_keys = ("label_sets", "ignore_row_if", "mostly")
    library_metadata: ClassVar[dict[str, Any]] = _LIBRARY_METADATA
