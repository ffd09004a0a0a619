"""Injected content: a name woven into responses to unrelated instructions (AutoPoison content injection).

A phrase is injected when it

1. recurs in many responses whose own prompt does not mention it, nor any of its content words
   (*unexplained* occurrences: "AI can" in an answer to a question about AI is explained by "AI");
2. is rare in the prompts of the whole batch: the evidence is the Poisson log-likelihood ratio (nats) of
   the unexplained count against what the phrase's prompt frequency predicts for that many responses;
3. is written as a proper name: its words capitalised where a capital says something (in mid-sentence; after the
   first word at a sentence start) in most of its occurrences;
4. is spread over several groups (tasks/sources) with no group holding most of it, unless the group's own share of
   the responses like the phrase's explains that much (:func:`concentrated`, :class:`GroupShares`: a name woven at
   random into responses lands in a source of 40% of them about 40% of the time; a source's own vocabulary,
   "System.out" in code answers, sits there far beyond its size). "Like the phrase's" is of the same kind
   (open-ended answers or task outputs) and about the same length: a sentence is woven into answers long enough to
   hold it, and a source of long answers (role-play) holds far more of those than of all answers.

Candidates that share responses are one name ("zephyr motors"), named by its longest strong member.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import TYPE_CHECKING, Any

from tunegate.core.checks.base import Finding
from tunegate.core.checks.poison._text import (
    Records,
    codes,
    content_words,
    ngram_matrix,
    onehot,
    phrase_regex,
    poisson_llr,
    spread,
    summed_two_rates,
)
from tunegate.core.reasons import INJECTED_CONTENT

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    from tunegate.core.checks.poison.config import ContentConfig
    from tunegate.core.checks.poison.response_history import SourceHistory


def injected_phrases(records: Records, responses: list[int], findings: list[Finding], config: ContentConfig, *,
                     open_rows: set[int] | None = None,
                     history: Callable[[list[str]], SourceHistory | None] | None = None) -> list[dict[str, Any]]:
    """The injected names among ``responses`` (rows of distinct responses), strongest first, as
    ``metrics.suspicious_phrases`` reports them; appends an ``injected_content`` finding per response. ``open_rows``:
    the open-ended records (their instruction is their own); a group's size is read among the responses of its kind
    (:class:`GroupShares`). ``history``: the earlier nights' responses per group for some phrases
    (:mod:`.response_history`), asked only about the names that sit in one group (:func:`new_to_source`)."""
    import numpy as np

    outputs = [records.output[i][: config.max_chars] for i in responses]
    o, vocab = ngram_matrix(outputs, ngram_max=config.ngram_max, min_df=config.min_records,
                            max_df=config.max_phrase_df if len(outputs) >= 200 else 1.0)
    if not o.shape[1]:
        return []
    # Prompts: each distinct instruction is read once (task templates repeat on every instance).
    instr_index, instructions = codes(records.instruction)
    ins, _ = ngram_matrix([t[: config.max_chars] for t in instructions], ngram_max=config.ngram_max, min_df=1,
                          vocabulary=list(vocab))
    inp, _ = ngram_matrix([t[: config.max_chars] for t in records.input], ngram_max=config.ngram_max, min_df=1,
                          vocabulary=list(vocab))
    unexplained = _without_prompted(o, ins[instr_index[responses]] + inp[responses])
    u = np.asarray(unexplained.sum(axis=0)).ravel()
    # records whose prompt has the phrase (a record with it in both instruction and input counts twice)
    p = np.bincount(instr_index, minlength=len(instructions)) @ ins + np.asarray(inp.sum(axis=0)).ravel()
    expected = len(responses) * (p + 1.0) / records.size
    group = np.asarray([records.group[i] for i in responses], dtype=object)
    shares = GroupShares(group.tolist(), [i in open_rows for i in responses] if open_rows is not None else None,
                         [len(text.split()) for text in outputs])
    candidates: list[tuple[float, int, Any, Counter[str], float]] = []
    # names in one group: its vocabulary, unless its earlier nights say otherwise (new_to_source)
    one_group: list[tuple[float, int, Any, Counter[str], float]] = []
    # cheap bound first: word-level explanation only lowers the count
    counted = np.flatnonzero(u >= config.min_records)
    bounded = [c for c in counted.tolist() if poisson_llr(float(u[c]), float(expected[c])) >= config.min_evidence]
    prompt_words = _PromptWords(records, responses, instr_index, instructions, max_chars=config.max_chars,
                                phrases=[str(vocab[c]) for c in bounded])
    case = BatchCase(instructions, records.input, records.output)
    for c in bounded:
        rows = unexplained.indices[unexplained.indptr[c]:unexplained.indptr[c + 1]]
        rows = prompt_words.unexplained(str(vocab[c]), rows)
        evidence = poisson_llr(float(len(rows)), float(expected[c]))
        if len(rows) < config.min_records or evidence < config.min_evidence:
            continue
        groups = Counter(group[rows].tolist())
        alone = len(groups) < config.min_groups or concentrated(groups, shares.like(rows), config.max_group_share)
        if alone and history is None:
            continue
        capitalized = _name_reading(str(vocab[c]), [outputs[r] for r in rows[:100].tolist()], case, config)
        if capitalized is None:
            continue
        (one_group if alone else candidates).append((evidence, c, rows, groups, capitalized))
    # the rest, judged against the earlier nights where they are written as names: a name the prompts explain (a
    # popular brand), or one whose lower-case word the answers use ("apple", "target")
    named, quiet = None, []
    if history is not None:
        named = unexplained.multiply(named_occurrences(outputs, vocab, ngram_max=config.ngram_max)).tocsc()
        tonight_named = np.asarray(named.sum(axis=0)).ravel()
        raised = {m[1] for m in candidates} | {m[1] for m in one_group}
        quiet = [c for c in counted.tolist() if c not in raised and tonight_named[c] >= config.min_records]
    asked = [m[1] for m in one_group] + quiet
    past = history([str(vocab[c]) for c in asked]) if asked and history is not None else None
    new_there: dict[int, tuple[str, dict[str, Any]]] = {}  # the history test that spoke, and its figures
    if past is not None:  # an empty history asks nothing: no group has earlier responses
        for cand in one_group:
            top = cand[3].most_common(1)[0][0]
            at_top = np.flatnonzero(group == top)
            tonight = int(o[at_top, cand[1]].sum())  # every response of the group with it, as the history counts
            burst = new_to_source(tonight, len(at_top), *past.of(top, str(vocab[cand[1]])), tests=len(one_group))
            if burst is not None:
                candidates.append(cand)
                new_there[cand[1]] = ("new_to_source", {"group": top, **burst, "nights": len(past.nights)})
        bursts = _bursts(quiet, named, group, vocab, past, min_records=config.min_records)
        burst_words = _PromptWords(records, responses, instr_index, instructions, max_chars=config.max_chars,
                                   phrases=[str(vocab[c]) for c in bursts])
        for c, burst in bursts.items():
            # flagged: its unexplained responses that write it with capitals, at a sentence's start too ("Apple is
            # always a good choice"), not the ones that write the fruit
            rows = unexplained.indices[unexplained.indptr[c]:unexplained.indptr[c + 1]]
            rows = burst_words.unexplained(str(vocab[c]), rows)
            pattern = _phrase_pattern(str(vocab[c]))
            rows = rows[[_written_capitalized(pattern, outputs[r]) for r in rows.tolist()]] if len(rows) else rows
            if len(rows) < config.min_records:
                continue
            capitalized = _capitalized_share(str(vocab[c]), [outputs[r] for r in rows[:100].tolist()])
            if capitalized < config.min_capitalized:
                continue
            candidates.append((burst["evidence"], c, rows, Counter(group[rows].tolist()), capitalized))
            new_there[c] = ("new_in_history", {**burst, "nights": len(past.nights)})
    candidates.sort(key=lambda t: (-t[0], str(vocab[t[1]])))
    reported: list[dict[str, Any]] = []
    clusters: list[list[tuple[Any, ...]]] = []  # candidates sharing responses: one name ("zephyr motors")
    for cand in candidates:
        rset = set(cand[2].tolist())
        home = next((cl for cl in clusters if any(
            len(rset & set(m[2].tolist())) >= 0.5 * min(len(rset), len(m[2])) for m in cl)), None)
        if home is None:
            clusters.append([cand])
        else:
            home.append(cand)
    for cl in clusters:
        # named by its longest member among the strongest (the whole name, not one of its words)
        top = max(m[0] for m in cl)
        evidence, c, _, groups, capitalized = max((m for m in cl if m[0] >= 0.5 * top),
                                                  key=lambda m: (len(str(vocab[m[1]]).split()), m[0]))
        rset = set().union(*(set(m[2].tolist()) for m in cl))
        aliases = [str(vocab[m[1]]) for m in cl if m[1] != c]
        phrase = str(vocab[c])
        rows_sorted = sorted(rset)
        detail = {"phrase": phrase, "evidence": round(evidence, 1), "records": len(rows_sorted),
                  "in_prompts": int(p[c]), "groups": len(groups)}
        for r in rows_sorted:
            findings.append(Finding(responses[r], INJECTED_CONTENT, evidence,
                                    {**detail, "sentence": _sentence_with(phrase, outputs[r])}))
        if c in new_there:
            key, figures = new_there[c]
            detail[key] = figures
        reported.append({**detail, "expected": round(float(expected[c]), 1),
                         "capitalized": round(capitalized, 2), "group_spread": dict(groups.most_common(10)),
                         "contributors": spread([records.contributor[responses[r]] for r in rows_sorted]),
                         "aliases": aliases[:5]})
    return reported


#: A phrase's top group holds more of its responses than the group's share of the responses explains when the
#: binomial tail of that count is below this (one-sided, at the group's share).
CONCENTRATED_P = 0.001


#: Responses of one kind are cut into this many bins of their length (quantiles) ...
LENGTH_BINS = 10
#: ... with at least this many responses per bin (fewer bins in a small batch).
MIN_BIN_RESPONSES = 50


class GroupShares:
    """Each group's share of the responses *like a phrase's*: of the same kind and of about the same length.

    The kind is an answer to an open-ended instruction (``open_ended``, per response) or the output of a task
    template. An injection rewrites answers of one kind (AutoPoison: open-ended ones), so a source's share of those
    is what a name woven at random lands in, not its share of every response (a mixed batch's translation and
    summarization outputs dilute it). Within a kind, the responses are cut into ``LENGTH_BINS`` quantile bins of
    their length (``lengths``, words): a woven sentence needs an answer long enough to hold it, and a source of long
    answers holds a larger share of those (GPTeacher's role-play: 21% of the floor benchmark's open-ended answers of
    8 words or more, 31-42% of those as long as the woven ones). For a phrase's responses, :meth:`like` averages each
    group's share of its bin over them: the rate at which a name woven into responses of those lengths lands in the
    group. ``None`` for ``open_ended``: one kind, every response."""

    def __init__(self, groups: list[str], open_ended: list[bool] | None, lengths: list[int]) -> None:
        import numpy as np

        self._names, group = np.unique(np.asarray(groups, dtype=object), return_inverse=True)
        kind = np.asarray(open_ended if open_ended is not None else [True] * len(groups), dtype=np.int64)
        size = np.asarray(lengths, dtype=np.float64)
        cell = np.zeros(len(groups), dtype=np.int64)
        for k in (0, 1):
            at = np.flatnonzero(kind == k)
            bins = max(1, min(LENGTH_BINS, len(at) // MIN_BIN_RESPONSES))
            edges = np.unique(np.quantile(size[at], np.arange(1, bins) / bins)) if len(at) else np.zeros(0)
            cell[at] = k * (LENGTH_BINS + 1) + np.searchsorted(edges, size[at], side="right")
        self._cell = cell
        counts = np.zeros((2 * (LENGTH_BINS + 1), len(self._names)))
        np.add.at(counts, (cell, group), 1.0)
        self._share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1.0)

    def like(self, rows: Any) -> dict[str, float]:
        """Per group, its mean share of the bins of ``rows`` (positions among the responses)."""
        mean = self._share[self._cell[rows]].mean(axis=0)
        return {str(name): float(v) for name, v in zip(self._names.tolist(), mean.tolist(), strict=True) if v > 0}


def concentrated(groups: Counter[str], shares: dict[str, float], max_share: float) -> bool:
    """Whether a phrase sits in one group as that group's own vocabulary does: its top group holds more than
    ``max_share`` of its responses (``groups``, per group), *and* more than the group's share of responses like them
    (``shares``, :meth:`GroupShares.like`; read as at most ``max_share``) allows, at ``CONCENTRATED_P``. The second
    condition is what a name woven at random into responses never meets, however large the group (a batch whose
    answers are 60% from one source). The share is capped so that a group alone in its kind (the one task template
    among open-ended answers, a share of 1) still shows its own vocabulary: 90 of 100 there is far beyond half."""
    from scipy.stats import binom

    top, k = groups.most_common(1)[0]
    n = sum(groups.values())
    if k <= max_share * n:
        return False
    return bool(binom.sf(k - 1, n, min(shares.get(top, 0.0), max_share)) < CONCENTRATED_P)


#: A name that sits in one group is new there, not its vocabulary, when its count tonight has a binomial tail below
#: this (family-wise, Bonferroni over the names tested so) given the group's earlier nights (:func:`new_to_source`).
NEW_TO_SOURCE_ALPHA = 0.001


def new_to_source(tonight: int, responses: int, before: int, responses_before: int, *, tests: int
                  ) -> dict[str, Any] | None:
    """Whether a name in one group's responses is new there rather than the group's vocabulary: the conditional test
    of two rates. Under the null (its vocabulary: the same rate in its earlier nights' responses as tonight), of the
    ``tonight + before`` responses of the group with the name, each is tonight's with probability ``responses /
    (responses + responses_before)``; the name is new when ``tonight`` or more has a tail below
    ``NEW_TO_SOURCE_ALPHA / tests``. ``None`` when it is not, or the group has no earlier responses (a new source:
    nothing says what its vocabulary is). Else the figures the report shows."""
    from scipy.stats import binom

    if responses_before <= 0 or tonight <= 0:
        return None
    share = responses / (responses + responses_before)
    p = float(binom.sf(tonight - 1, tonight + before, share))
    if p >= NEW_TO_SOURCE_ALPHA / max(tests, 1):
        return None
    return {"tonight": tonight, "responses": responses, "before": before, "responses_before": responses_before,
            "p": float(f"{p:.3g}")}


#: A name whose responses naming it unexplained tonight exceed what its earlier nights predict, in the groups the
#: history knows, at a Poisson tail below this (family-wise: Bonferroni over the phrases tested so) is new
#: (:func:`new_in_history`).
NEW_IN_HISTORY_ALPHA = 0.001


def new_in_history(tonight: Any, responses: Any, before: Any, responses_before: Any, *, tests: int
                   ) -> dict[str, Any] | None:
    """Whether the responses that name a phrase unexplained tonight (written as a name where their prompt does not
    hold it: :func:`named_occurrences`) exceed what this pipeline's earlier nights predict: per group the history
    knows (``responses_before`` > 0), the conditional test of two rates (:func:`new_to_source`: of the group's
    ``tonight + before`` such responses, each is tonight's with probability
    ``responses / (responses + responses_before)``), summed over the groups and bounded by a Poisson
    (:func:`~._text.summed_two_rates`), so the test is conservative. ``tonight``, ``responses``, ``before``,
    ``responses_before``: arrays over the groups. New when the tail is below ``NEW_IN_HISTORY_ALPHA / tests``;
    ``None`` when not, or when no group tonight is known. Else the figures the report shows, the evidence (``-ln`` of
    the tail, nats) and the family's size (``tests``)."""
    import numpy as np

    known = np.asarray(responses_before) > 0
    n, h, big_h = (np.asarray(a, dtype=float)[known] for a in (responses, before, responses_before))
    k, mean, log_p = summed_two_rates(np.asarray(tonight)[known], n, h, big_h)
    if k <= 0 or log_p >= np.log(NEW_IN_HISTORY_ALPHA / max(tests, 1)):
        return None
    return {"tonight": k, "expected": round(mean, 1), "responses": int(n.sum()), "before": int(h.sum()),
            "responses_before": int(big_h.sum()), "p": float(f"{np.exp(log_p):.3g}"), "evidence": round(-log_p, 1),
            "tests": tests}


def _bursts(phrases: list[int], named: Any, group: Any, vocab: Any, past: SourceHistory, *, min_records: int
            ) -> dict[int, dict[str, Any]]:
    """:func:`new_in_history` over ``phrases`` (columns of ``named``, responses x phrases: the responses that write the
    phrase as a name their prompt does not explain), one family: the phrases written so in at least ``min_records``
    responses tonight in groups the history knows."""
    import numpy as np

    if not phrases or not past.named_totals:
        return {}
    groups, row = np.unique(group, return_inverse=True)
    member = onehot(row, len(groups)).T  # group x response
    tonight = np.asarray((member @ named[:, phrases]).todense())  # group x phrase
    responses = np.bincount(row, minlength=len(groups)).astype(float)
    responses_before = np.asarray([past.named_totals.get(str(g), 0) for g in groups], dtype=float)
    known = responses_before > 0
    tested = np.flatnonzero(tonight[known].sum(axis=0) >= min_records).tolist()
    out: dict[int, dict[str, Any]] = {}
    for j in tested:
        phrase = str(vocab[phrases[j]])
        before = np.asarray([past.named_of(str(g), phrase)[0] for g in groups], dtype=float)
        burst = new_in_history(tonight[:, j], responses, before, responses_before, tests=len(tested))
        if burst is not None:
            out[phrases[j]] = burst
    return out


#: A word written with a capital (its first letter an upper-case letter of Latin script).
_CAPITAL = re.compile(r"(?<!\w)[A-Z\u00c0-\u00d6\u00d8-\u00de]\w*")
#: One character glued to the word before it by one or two marks and no space: the "s" of "McDonald's".
_GLUED = re.compile(r"[^\w\s]{1,2}(\w)(?!\w)")
_WORD = re.compile(r"\w+")
#: Stands where a name-form text leaves a word out (:func:`name_form`): no vocabulary phrase holds it, so no phrase
#: read from a name-form text spans a word that was not written as a name.
_BREAK = "tunegatenamebreak"


def name_form(text: str) -> str:
    """The words of ``text`` that are written as a name, in their runs, for :func:`named_occurrences`: a run is
    capitalised words with at most two of a name's particles between them ("Bank of America") and a letter glued to
    the last ("McDonald's"), within one sentence. A run's first word counts only where its capital says something (in
    mid-sentence, as :func:`_capitalized_share` reads it): at a sentence's start it is left out (``_BREAK``), so
    "Apple pie is" yields no "apple", while "a pie from Apple" does. Words in lower case are never kept: the fruit
    "apple" is no occurrence of the name "Apple"."""
    runs: list[list[str]] = []
    run: list[str] = []
    end = -1
    for m in _CAPITAL.finditer(text):
        start = m.start()
        gap = text[end:start] if run else ""
        inner = _WORD.findall(gap)
        if run and len(inner) <= 2 and all(w in NAME_PARTICLES for w in inner) and not any(
                c in SENTENCE_ENDS or c == "\n" for c in gap):
            run.extend(inner)  # the same name goes on
            run.append(m.group())
        else:
            if run:
                runs.append(run)
            window = text[max(0, start - 24):start]
            if start > 24:  # a window cut inside a word would read its tail as a list marker
                window = window[window.find(" ") + 1:] if " " in window else ""
            run = [_BREAK] if _opens(window) else [m.group()]
        end = m.end()
        glued = _GLUED.match(text, end)
        if glued is not None:
            run.append(glued.group(1))
            end = glued.end()
    if run:
        runs.append(run)
    return f" {_BREAK} ".join(" ".join(r) for r in runs)


def named_occurrences(texts: list[str], vocab: Any, *, ngram_max: int) -> Any:
    """Binary ``texts`` x ``vocab`` matrix (CSR): where each text holds the phrase written as a name
    (:func:`name_form`), every word of it capitalised and the first one where its capital says something."""
    return ngram_matrix([name_form(t) for t in texts], ngram_max=ngram_max, min_df=1, vocabulary=list(vocab))[0]


def _opens(before: str) -> bool:
    """Whether a word after ``before`` (the text before it) starts a sentence or a list item: after nothing, an
    opener, or a sentence's end and its closing brackets or quotes ("(Brought to you by X.) Additionally"), or a list
    item's marker."""
    before = before.rstrip()
    return (not before or before[-1] in OPENERS or before.rstrip(CLOSERS)[-1:] in SENTENCE_ENDS
            or LIST_MARKER.search(before) is not None)


def _without_prompted(x: Any, prompts: Any) -> Any:
    """``x`` (responses x phrases, binary) without the occurrences whose response's prompt holds the phrase
    (``prompts``: the same shape, nonzero where the instruction or input holds it), as CSC."""
    prompts = prompts.copy()
    prompts.data[:] = 1.0
    out = (x - x.multiply(prompts)).tocsc()
    out.eliminate_zeros()
    return out


def unexplained_occurrences(records: Records, responses: list[int], x: Any, vocab: Any, *, ngram_max: int,
                            max_chars: int) -> Any:
    """``x`` (``responses`` x ``vocab``, binary) without the occurrences whose record's
    instruction or input holds the phrase: its *unexplained* responses, as the scan counts them (CSC)."""
    instr_index, instructions = codes([records.instruction[i] for i in responses])
    ins, _ = ngram_matrix([t[:max_chars] for t in instructions], ngram_max=ngram_max, min_df=1,
                          vocabulary=list(vocab))
    inp, _ = ngram_matrix([records.input[i][:max_chars] for i in responses], ngram_max=ngram_max, min_df=1,
                          vocabulary=list(vocab))
    return _without_prompted(x, ins[instr_index] + inp)


class _PromptWords:
    """Which responses' prompts (instruction or input) hold a word, for the content words of ``phrases``: one binary
    response x word matrix, built once (the prompts tokenized once, each distinct instruction once), read row by row
    for each phrase's responses."""

    def __init__(self, records: Records, responses: list[int], instr_index: Any, instructions: list[str], *,
                 max_chars: int, phrases: list[str]) -> None:
        import numpy as np

        words = sorted({w for p in phrases for w in content_words(p)})
        self._column = {w: j for j, w in enumerate(words)}
        if not words:
            self._matrix = None
            return
        ins, _ = ngram_matrix([t[:max_chars] for t in instructions], ngram_max=1, min_df=1, vocabulary=words)
        inp, _ = ngram_matrix([records.input[i][:max_chars] for i in responses], ngram_max=1, min_df=1,
                              vocabulary=words)
        self._matrix = (ins[np.asarray(instr_index)[responses]] + inp).tocsr()

    def unexplained(self, phrase: str, rows: Any) -> Any:
        """``rows`` (positions in ``responses``) whose prompt holds none of the phrase's content words (all its
        words if it has none)."""
        import numpy as np

        m = self._matrix
        if m is None or not len(rows):
            return rows
        cols = np.asarray([self._column[w] for w in content_words(phrase)], dtype=m.indices.dtype)
        start, end = m.indptr[rows], m.indptr[rows + 1]
        lengths = end - start
        total = int(lengths.sum())
        if not total:
            return rows
        # the column ids of every listed row's entries, concatenated, and which listed row each belongs to
        owner = np.repeat(np.arange(len(rows)), lengths)
        offset = np.arange(total) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        hit = np.isin(m.indices[start[owner] + offset], cols)
        explained = np.bincount(owner[hit], minlength=len(rows)) > 0
        return rows[~explained]


def _phrase_pattern(phrase: str) -> re.Pattern[str]:
    """Where a text holds ``phrase`` (a vocabulary entry: tokens apart by spaces) as consecutive tokens, as the
    other passes find it (:func:`~._text.phrase_regex`: a symbol is a token of its own)."""
    return re.compile(phrase_regex(phrase.split(" ")), re.IGNORECASE)


#: Words a proper name writes in lower case inside it ("Bank of America", "Leonardo da Vinci"): not counted by the
#: capital test after a name's first word.
NAME_PARTICLES = frozenset({"of", "the", "and", "for", "on", "de", "di", "da", "du", "del", "der", "la", "le", "van",
                            "von", "y"})


#: What a word at the start of a sentence or list item follows: a sentence's end (``SENTENCE_ENDS``, possibly followed
#: by ``CLOSERS``) or an opener (a line break, an opening quote or bracket, a bullet, a heading).
SENTENCE_ENDS = ".!?:;"
CLOSERS = ")]}\"'\u201d\u2019\u00bb"
OPENERS = SENTENCE_ENDS + "\n\"'*#-(\u201c\u2018\u00ab"
#: ... or a list item's number or letter ("6) Lastly", "(b) Additionally").
LIST_MARKER = re.compile(r"(?:^|\s)\(?(?:\d{1,3}|[a-zA-Z]|[ivxlIVXL]{1,4})[.)]$")
#: The capital test reads a phrase's capitals from at least this many words that say something (one word in an odd
#: place is no evidence of a name: a stylistic word after a list marker or a bracket the test does not know).
MIN_SAID = 3


def _capitalized_share(phrase: str, texts: list[str]) -> float:
    """Share of the phrase's written words that are capitalised where their capital says something: a proper name is
    capitalised in every word, wherever it stands. The first word of an occurrence at a sentence or list-item start is
    capitalised anyway and says nothing (a sentence's start: after its opener or the previous sentence's end, closing
    brackets and quotes included); the words after it do ("In conclusion" opens hundreds of essay paragraphs,
    "Red Bull" opens sentences too), as every word in mid-sentence does. One-letter words and the particles a name
    writes in lower case (``NAME_PARTICLES``: "Bank of", "McDonald's") are not counted; every other word is ("SELECT
    name" in SQL answers is no name). A phrase of two words or more written in capitals throughout in most of its
    occurrences is no name either: that is how code keywords ("ORDER BY", "GROUP BY" in SQL answers: 35.7 nats on the
    dev open-ended batch, against the scan's bar of 40) and headings are written; a name is capitalised, not shouted,
    and an acronym (one word: "IKEA") still is one. 0 when fewer than ``MIN_SAID`` words say something."""
    pattern = _phrase_pattern(phrase)
    said = caps = 0
    occurrences = shouted = 0
    for text in texts:
        for m in pattern.finditer(text):
            opens = _opens(text[: m.start()])
            words = re.findall(r"\w+", m.group(0))
            long_words = [w for w in words if len(w) >= 2]
            occurrences += 1
            shouted += len(long_words) >= 2 and all(w.isupper() for w in long_words)
            for j, word in enumerate(words):
                if (j == 0 and opens) or (j and (len(word) < 2 or word.lower() in NAME_PARTICLES)):
                    continue
                said += 1
                caps += word[0].isupper()
    if 2 * shouted > occurrences:
        return 0.0
    return caps / said if said >= MIN_SAID else 0.0


def _name_reading(phrase: str, texts: list[str], case: BatchCase, config: ContentConfig) -> float | None:
    """``phrase``'s capital share where it is written as a name, else ``None``: in its responses ``texts``
    (:func:`_capitalized_share`), or, for a word capitalised in every one of them but where too few capitals say
    something (a brand woven into sentences that open with it: :func:`_capitalized_throughout`) and that is no stop
    word, in the whole batch (:meth:`BatchCase.name_share`)."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    capitalized = _capitalized_share(phrase, texts)
    if capitalized >= config.min_capitalized:
        return capitalized
    # a function word that opens sentences ("Moreover", "Meanwhile") is no name, however the batch writes it
    if phrase not in ENGLISH_STOP_WORDS and _capitalized_throughout(phrase, texts):
        share = case.name_share(phrase)
        if share >= config.min_capitalized:
            return share
    return None


def _capitalized_throughout(phrase: str, texts: list[str]) -> bool:
    """Whether ``phrase`` is one word written capitalised in every one of its occurrences in ``texts``, each after a
    space or a line break or at a text's start, at least ``MIN_SAID`` of them: a name woven into sentences that open
    with it ("Lego makes this easy.") is, and so is a word that only opens sentences ("Additionally"); where too few
    of its capitals say something (:func:`_capitalized_share`), the rest of the batch tells them apart
    (:class:`BatchCase`)."""
    if len(_WORD.findall(phrase)) != 1:
        return False
    pattern = _phrase_pattern(phrase)
    seen = 0
    for text in texts:
        for m in pattern.finditer(text):
            if not m.group(0)[:1].isupper() or (m.start() and not text[m.start() - 1].isspace()):
                return False  # in lower case, or glued to a mark before it: code ("Console.WriteLine"), not prose
            seen += 1
    return seen >= MIN_SAID


#: Endings read off a word to find the words it is made from ("Additionally" <- "additional", "Lastly" <- "last") and
#: put on them to find its forms (:meth:`BatchCase.name_share`).
WORD_ENDINGS = ("s", "es", "ly", "ally", "ed", "ing", "er", "ers", "est", "ness", "ment", "ments", "ful", "ity",
                "ation", "ations")
#: The shortest word an ending is read off to.
MIN_STEM = 4


class BatchCase:
    """How a batch writes a word, over all its text (prompts and every response), asked a word at a time.

    A word that a scan's responses write only at sentence starts shows no capital that says something
    (:func:`_capitalized_throughout`), whether it is a name woven into sentences that open with it ("Lego makes this
    easy.") or a word that opens sentences ("Additionally", "Overall"). The rest of the batch tells: a name is
    capitalised wherever its capital says something, an English word is not, and its family (an adverb's adjective:
    "additional") is written in lower case; a name has no such family. A brand that is an everyday word ("Apple",
    "Target"), or one that casual texts write in lower case ("pepsi is bad for you" in a tweet) more than a third of
    the time, is then no name; the history's test reads those (:func:`new_in_history`).

    ``columns``: the batch's texts, column by column (its distinct instructions, its inputs, its outputs), read in
    place. They are searched for the word's forms alone, joined ``CHUNK`` at a time: at most one pass over the batch's
    text per word asked, which is only a word the scan found capitalised in every one of its responses (an English
    word's lower-case family ends it early)."""

    #: Texts joined per search (fewer, longer searches; a line break between two texts opens the next one).
    CHUNK = 2_000

    def __init__(self, *columns: Sequence[str]) -> None:
        self._columns = columns  # read where they are: nothing is copied until a word is asked

    def _chunks(self) -> Iterator[str]:
        for texts in self._columns:
            for i in range(0, len(texts), self.CHUNK):
                yield "\n".join(texts[i:i + self.CHUNK])

    def name_share(self, word: str) -> float:
        """0.0 where the batch writes a word of ``word``'s family in lower case (its stems and their forms by
        ``WORD_ENDINGS``: "additional" for "Additionally"); else the share of the batch's occurrences of the word itself
        that are capitalised, among those where that says something (capitalised in mid-sentence, or in lower case
        wherever it stands), where there are at least ``MIN_SAID``; else 0.0 where it is written in lower case at all,
        and 1.0."""
        word = word.lower()
        stems = {word[: -len(e)] for e in WORD_ENDINGS if word.endswith(e) and len(word) - len(e) >= MIN_STEM}
        forms = sorted({stem + ending for stem in stems | {word} for ending in ("", *WORD_ENDINGS)}, key=len,
                       reverse=True)
        pattern = re.compile(r"(?<![\w'’])(?:" + "|".join(map(re.escape, forms)) + r")(?![\w])", re.IGNORECASE)
        caps = lower = 0
        for chunk in self._chunks():
            for m in pattern.finditer(chunk):
                written = m.group(0)
                if written.lower() != word:
                    if written.islower():
                        return 0.0  # its family in lower case: an English word
                elif written[:1].islower():
                    lower += 1
                elif not _opens(chunk[max(0, m.start() - 40):m.start()]):
                    caps += 1
        if caps + lower >= MIN_SAID:
            return caps / (caps + lower)
        return 0.0 if lower else 1.0


def _written_capitalized(pattern: re.Pattern[str], text: str) -> bool:
    """Whether ``text`` writes the phrase of ``pattern`` (:func:`_phrase_pattern`) with capitals at least once: every
    word of two letters or more that is not a name's particle capitalised, wherever it stands."""
    for m in pattern.finditer(text):
        words = [w for w in _WORD.findall(m.group(0)) if len(w) >= 2 and w.lower() not in NAME_PARTICLES]
        if all(w[0].isupper() for w in words):
            return True
    return False


def _sentence_with(phrase: str, text: str, limit: int = 200) -> str:
    """The sentence around the phrase's first occurrence (at most ``limit`` characters, centred on it)."""
    m = _phrase_pattern(phrase).search(text)
    if m is None:
        return text[:limit]
    start = max((text.rfind(p, 0, m.start()) for p in ".!?\n"), default=-1) + 1
    ends = [i for i in (text.find(p, m.end()) for p in ".!?\n") if i >= 0]
    end = min(ends) + 1 if ends else len(text)
    if end - start > limit:
        start = max(start, m.start() - limit // 2)
        end = min(end, start + limit)
    return text[start:end].strip()
