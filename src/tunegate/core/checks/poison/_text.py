"""Shared plumbing for the poison checks: the records they read, tasks, word n-grams, evidence arithmetic."""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import scipy.sparse as sp

    from tunegate.core.checks.base import CanonicalBatch
    from tunegate.core.checks.poison._ngrams import WordStats

#: Words: runs of letters/digits, lower-cased. Punctuation never joins an n-gram ("McDonald's" is
#: "mcdonald s"), so a phrase matches whatever punctuation surrounds it. A pictographic symbol (an emoji, a
#: dingbat, an arrow, a geometric shape: :data:`SYMBOLS`) is a word of its own: a trigger need not be letters
#: ("🦄", "★★"), and one made of symbols alone was invisible to every pass.
SYMBOLS = "\u2190-\u21ff\u2300-\u23ff\u25a0-\u27bf\u2b00-\u2bff\U0001f000-\U0001faff"
TOKEN_PATTERN = rf"(?u)\b\w+\b|[{SYMBOLS}]"
_TOKEN = re.compile(TOKEN_PATTERN)
_SYMBOL = re.compile(f"[{SYMBOLS}]")
#: What may stand between two consecutive tokens: anything but a word character or a symbol (a symbol is a token)
_GAP = f"[^\\w{SYMBOLS}]"


def has_symbol(phrase: str) -> bool:
    """Whether ``phrase`` holds a pictographic symbol (:data:`SYMBOLS`)."""
    return _SYMBOL.search(phrase) is not None


def phrase_regex(words: list[str]) -> str:
    """A regular expression that finds ``words`` (tokens as :func:`tokens` reads them) as consecutive tokens of a
    text: words apart by at least one gap character, a symbol by any number (it needs no space: "great🦄movie"), and
    no word character glued to a word at either end. Compile it with ``re.IGNORECASE`` or over lower-cased text."""
    symbol = [_SYMBOL.fullmatch(w) is not None for w in words]
    out = []
    for i, w in enumerate(words):
        if i:
            out.append(f"{_GAP}*" if symbol[i] or symbol[i - 1] else f"{_GAP}+")
        elif not symbol[i]:
            out.append(r"(?<!\w)")
        out.append(re.escape(w))
    if words and not symbol[-1]:
        out.append(r"(?!\w)")
    return "".join(out)


def counted(n: int, noun: str) -> str:
    """``n`` and ``noun``, plural unless ``n`` is 1: "1 dataset", "3 datasets" (a finding's reason)."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def content_words(phrase: str) -> list[str]:
    """A phrase's words that are not stop words (all its words if it has none)."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return [w for w in phrase.split() if w not in ENGLISH_STOP_WORDS] or phrase.split()


@dataclass
class Records:
    """The text columns of a batch in row order, plus the group (task, else source) of each row."""

    instruction: list[str]
    input: list[str]
    output: list[str]
    group: list[str]
    contributor: list[str | None]
    source: list[str] | None = None  # each record's source, where read (:meth:`read`)

    @property
    def size(self) -> int:
        return len(self.group)

    def release_text(self) -> None:
        """Drop the text columns once what they were read for is built (a million records' texts are a
        gigabyte); ``group`` and ``contributor`` stay."""
        self.instruction, self.input, self.output = [], [], []

    @classmethod
    def read(cls, batch: CanonicalBatch) -> Records:
        import pyarrow.compute as pc

        from tunegate.core.checks.record_size import CLIP_MARGIN, DEFAULT_MAX_FIELD_CHARS

        cols = ["instruction", "input", "output", "task", "source", "contributor"]
        texts = {"instruction", "input", "output"}
        keep = DEFAULT_MAX_FIELD_CHARS + CLIP_MARGIN  # a longer field is quarantined by record_size already
        data: dict[str, list[Any]] = {c: [] for c in cols}
        for _, rb in batch.iter_batches(columns=cols):
            for c in cols:
                column = rb.column(c)
                if c in texts:  # cut in Arrow: a 50 MB field never becomes a 50 MB Python string here
                    column = pc.utf8_slice_codeunits(column, 0, keep)
                data[c].extend(column.to_pylist() if c == "input" else _shared(column))
        group = [t or s or "(none)" for t, s in zip(data["task"], data["source"], strict=True)]
        return cls(data["instruction"], data["input"], data["output"], group, data["contributor"],
                   [s or "(none)" for s in data["source"]])

    def prompts(self, max_chars: int) -> list[str]:
        """What a trigger hides in: the input, plus the instruction where it is the record's own.

        An instruction shared by several records is a task template (Super-NaturalInstructions repeats
        its definition on every instance); scanning it would only add the same n-grams to a whole task.
        """
        shared = Counter(self.instruction)
        return [(f"{ins}\n{inp}" if shared[ins] == 1 else inp)[:max_chars]
                for ins, inp in zip(self.instruction, self.input, strict=True)]

    def groups(self) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        for i, g in enumerate(self.group):
            out.setdefault(g, []).append(i)
        return out


def _shared(column: Any) -> list[Any]:
    """A column's values as Python objects, one object per distinct value of the chunk: a task's template
    instruction, its labels and its name repeat on every record (a million copies of a 500-character definition
    are half a gigabyte; shared, a few kilobytes)."""
    import numpy as np
    import pyarrow.compute as pc

    encoded = pc.dictionary_encode(column)
    values = [*encoded.dictionary.to_pylist(), None]
    indices = pc.fill_null(encoded.indices, len(values) - 1).to_numpy(zero_copy_only=False)
    return [values[i] for i in np.asarray(indices).tolist()]


def label_set(outputs: list[str], *, min_records: int, max_labels: int, coverage: float, max_words: int = 6
              ) -> list[str] | None:
    """The labels of a classification task, or ``None`` when its outputs are not labels.

    Outputs are labels when the task has at least ``min_records`` records and a small closed set of short
    outputs that repeat: at most ``max_labels`` distinct outputs, each of at most ``max_words`` words,
    cover ``coverage`` of the records (Super-NaturalInstructions polarity and toxicity tasks: 2-4 labels
    of 1-3 words cover 100%). Open-ended answers never qualify, so they are never scored for label
    concentration.
    """
    if len(outputs) < min_records:
        return None
    top = Counter(outputs).most_common(max_labels)
    if len(top) < 2 or sum(n for _, n in top) < coverage * len(outputs):
        return None
    if any(len(tokens(label)) > max_words for label, _ in top):
        return None
    return [label for label, _ in top]


def ngram_matrix(texts: list[str], *, ngram_max: int, min_df: int, max_df: float = 1.0,
                 vocabulary: Any = None, stats: WordStats | None = None) -> tuple[sp.csr_matrix, np.ndarray]:
    """Binary record x word n-gram matrix (CSR) and the n-gram of each column (alphabetical, or
    ``vocabulary``'s order). Phrases of 1-2 words (the default) are counted by :mod:`._ngrams`, which equals
    scikit-learn's CountVectorizer at a fraction of its cost; longer ones by CountVectorizer itself. ``stats``
    (1-2 word phrases only): filled with the batch's word statistics (:class:`._ngrams.WordStats`)."""
    import numpy as np
    import scipy.sparse as sp
    from sklearn.feature_extraction.text import CountVectorizer

    if ngram_max <= 2:
        from tunegate.core.checks.poison._ngrams import ngram_matrix as fast

        return fast(texts, pattern=TOKEN_PATTERN, min_df=min_df, max_df=max_df, bigrams=ngram_max == 2,
                    vocabulary=vocabulary, stats=stats)
    if vocabulary is not None:
        vec = CountVectorizer(token_pattern=TOKEN_PATTERN, ngram_range=(1, ngram_max), binary=True,
                              dtype=np.float32, vocabulary=vocabulary)
        return vec.transform(texts).tocsr(), np.asarray(vocabulary, dtype=object)
    vec = CountVectorizer(token_pattern=TOKEN_PATTERN, ngram_range=(1, ngram_max), binary=True, min_df=min_df,
                          max_df=max_df, dtype=np.float32)
    try:
        x = vec.fit_transform(texts)
    except ValueError:  # nothing survives min_df/max_df (a tiny batch)
        return sp.csr_matrix((len(texts), 0), dtype=np.float32), np.array([], dtype=object)
    return x.tocsr(), vec.get_feature_names_out()


def onehot(outcome: np.ndarray, size: int) -> sp.csr_matrix:
    """Rows x ``size`` indicator matrix of each row's outcome: ``x.T @ onehot(y)`` counts a phrase's records per
    label."""
    import numpy as np
    import scipy.sparse as sp

    return sp.csr_matrix((np.ones(len(outcome), dtype=np.float32), (np.arange(len(outcome)), outcome)),
                         shape=(len(outcome), size))


def binomial_llr(k: Any, n: Any, p: Any) -> Any:
    """Log-likelihood ratio (nats) of ``k`` successes in ``n`` at the observed rate versus rate ``p``.

    ``n * KL(k/n || p)``; zero when ``k/n <= p``. Works on numpy arrays.
    """
    import numpy as np

    k = np.asarray(k, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-6, 1 - 1e-6)
    q = np.divide(k, n, out=np.zeros_like(k), where=n > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where(k > 0, k * np.log(q / p), 0.0)
        b = np.where(n - k > 0, (n - k) * np.log((1 - q) / (1 - p)), 0.0)
    return np.where(q > p, a + b, 0.0)


def betabinom_logpmf(k: Any, n: Any, a: Any, b: Any) -> Any:
    """``ln P(K = k)`` for ``K`` beta-binomial over ``n`` trials with shapes ``a`` and ``b`` (numpy arrays broadcast).
    The same values as scipy's ``betabinom.logpmf`` (tested), without its fixed cost per call, which dominated the
    novelty pass's many small calls."""
    from scipy.special import betaln, gammaln

    return gammaln(n + 1) - gammaln(k + 1) - gammaln(n - k + 1) + betaln(k + a, n - k + b) - betaln(a, b)


def summed_two_rates(tonight: Any, responses: Any, before: Any, responses_before: Any) -> tuple[int, float, float]:
    """The conditional test of two rates per group, summed over the groups (arrays, one entry per group, each with
    earlier responses): of a group's ``tonight + before`` counted responses, each is tonight's with probability
    ``responses / (responses + responses_before)``. Returns tonight's total, the summed means and ``ln`` of the
    sum's upper tail read as a Poisson's of the summed means, which bounds the sum of binomials from above (Hoeffding;
    Anderson and Samuels), so a test on it is conservative (0 when tonight's total is 0)."""
    import numpy as np
    from scipy.stats import poisson

    k_g, n, h, big_h = (np.asarray(a, dtype=float) for a in (tonight, responses, before, responses_before))
    k = int(k_g.sum())
    mean = float(((k_g + h) * n / (n + big_h)).sum())
    return k, mean, float(poisson.logsf(k - 1, mean)) if k > 0 else 0.0


def poisson_llr(observed: float, expected: float) -> float:
    """Log-likelihood ratio (nats) of a Poisson count ``observed`` against mean ``expected``."""
    if observed <= expected or expected <= 0:
        return 0.0
    return observed * math.log(observed / expected) - (observed - expected)


def codes(values: list[str]) -> tuple[np.ndarray, list[str]]:
    """Integer code of each value and the sorted distinct values."""
    import numpy as np

    names = sorted(set(values))
    index = {v: i for i, v in enumerate(names)}
    return np.fromiter((index[v] for v in values), dtype=np.int64, count=len(values)), names


def spread(values: list[str | None]) -> dict[str, int]:
    """Counts of the non-empty values, most common first (at most 10)."""
    return dict(Counter(v for v in values if v).most_common(10))
