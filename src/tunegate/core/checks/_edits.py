"""The edit rule: whether two versions of one field are the same text said again (near_duplicate).

Case, spacing, punctuation, a typo, a split or joined word, a moved sentence and up to 5% changed words
are no change; a new clause, a changed number, another name or a different short answer are. The words
compared are :func:`field_words`; :func:`field_difference` says why two fields differ, or ``None``.
"""

from __future__ import annotations

import difflib
import functools
import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

_WORD = re.compile(r"\w+")
_TOKEN = re.compile(r"\w+|[^\w\s]+")
_SENTENCE_PUNCTUATION = ".,!?;'\"`#@-\u2026\u2019\u201c\u201d"
#: Answers of up to this many words must be equal word for word (after lower-casing, dropping punctuation):
#: a label, a number, a star rating, a short span.
SHORT_ANSWER_WORDS = 8
#: From this many shared words a text tolerates 5% changed words and typos of any length; below, one added
#: or dropped word from 4 shared words, typos of 4+ letters from 3 (``cat`` vs ``cats`` is another input).
_MIN_TOLERANT = 8
#: A typo (a word at character similarity >= _TYPO_RATIO) in a text of fewer than _MIN_TOLERANT shared words
#: is still a typo when the words are this long and this many words are shared (``txpayer``, ``whih``).
_MIN_TYPO_CONTEXT = 3
_MIN_TYPO_WORD = 4
#: A word replaced by another (not a typo) is an edit only in a text of this many shared words: in a short
#: sentence it makes another sentence (``A man is talking`` vs ``A man is eating``).
_MIN_SUBSTITUTION = 20
#: Closed-class English words. Adding or dropping one in a short text changes its grammar, not its wording:
#: CoLA's minimal pairs ("The more people (that) arrive, the louder it gets") are distinct examples, while an
#: added "really" or "new" is the edit a re-submission shows.
_FUNCTION_WORDS = frozenset((
    "a", "an", "the", "this", "that", "these", "those", "some", "any", "each", "every", "no", "all", "both",
    "either", "neither", "i", "me", "my", "mine", "we", "us", "our", "you", "your", "yours", "he", "him", "his",
    "she", "her", "hers", "it", "its", "they", "them", "their", "theirs", "one", "myself", "yourself", "himself",
    "herself", "itself", "ourselves", "themselves", "someone", "everyone", "anyone", "noone", "nobody", "who",
    "whom", "whose", "which", "what", "where", "when", "why", "how", "whether", "if", "than", "as", "so", "because",
    "since", "while", "although", "though", "and", "or", "nor", "but", "not", "to", "of", "in", "on", "at", "by",
    "for", "with", "from", "about", "into", "onto", "over", "under", "up", "down", "out", "off", "upon", "is",
    "are", "was", "were", "be", "been", "being", "am", "do", "does", "did", "have", "has", "had", "can", "could",
    "will", "would", "shall", "should", "may", "might", "must", "there", "here", "then", "t", "s", "d", "ll", "re",
    "ve", "m"
))
#: Share of the shared words that may be substituted, added or dropped (at least one from _MIN_TOLERANT on).
_CHANGED_SHARE = 0.05
#: A run of this many changed words on one side is new content (a question, a sentence), never an edit.
_NEW_CONTENT_RUN = 3
#: Changes only at the start or end of a field (a prompt template's wrapper) are tolerated around a shared
#: core of at least this many words that is at least as long as the changes.
_WRAPPER_CORE = 20
_ANCHOR_WORDS = 5  # a shared run this long anchors the core (shorter ones are template words by chance)
_MOVED_RUN = 5  # a run of this many words dropped in one place and added unchanged elsewhere moved
_TYPO_RATIO = 0.75  # character similarity of a changed run that makes it a typo, not another word


#: Characters of each field that verification reads: far more than the embedding's ``max_chars``, so that a
#: question after a long passage is seen (two questions about one article differ after 2,000 characters).
VERIFY_CHARS = 20_000
#: Last token of the words of a field longer than ``max_chars``: what follows the cut is not compared.
CUT = "\x00cut"


def field_words(text: str | None, max_chars: int) -> tuple[str, ...]:
    """Lower-cased words of a field: case, spacing and sentence punctuation are not what makes an example.

    In a short field (fewer than 8 words) symbols count too (``;)`` vs ``:-(``, ``$$$$``), except sentence
    punctuation and the ``#``/``@`` of tags (``Huh..`` is ``huh?``, ``#MAGA`` is ``MAGA!``). A field cut at
    ``max_chars`` ends with :data:`CUT`, and its last, possibly partial, word is dropped."""
    raw = text or ""
    t = raw[:max_chars].lower()
    words = _WORD.findall(t)
    if len(raw) > max_chars:
        return (*words[:-1], CUT)
    if len(words) >= _MIN_TOLERANT:
        return tuple(words)
    tokens = tuple(w for w in _TOKEN.findall(t) if w.strip(_SENTENCE_PUNCTUATION))
    rest = "".join(t.split())
    return tokens or ((rest,) if rest else ())


def field_difference(a: tuple[str, ...], b: tuple[str, ...], *, answer: bool = False,
                     is_wrapper: Callable[[tuple[str, ...], tuple[str, ...]], bool] | None = None,
                     lenient: bool = False) -> str | None:
    """Why two versions of one field are not the same text said again, or ``None`` when they are (or are
    both empty: no evidence either way; the caller requires evidence from at least one field).

    ``is_wrapper(region, core)``: whether a run of words around the shared ``core`` is template text (far
    more frequent in the batch than the core). What differs before or after a long shared passage is
    tolerated as another template's wrapper only then; otherwise it is what is asked (a question about
    the passage, a review inside a rating template). Without ``is_wrapper``, no wrapper is tolerated.

    An added or dropped function word in a text of fewer than 20 shared words is another example (CoLA's
    minimal pairs: "The more people (that) arrive, the louder it gets") unless ``lenient``: the record's
    own content is pinned by another, identical field (see :func:`pair_difference`)."""

    if a == b:
        return None
    if not a or not b:
        return "empty on one side"
    longest = max(len(a), len(b))
    short_answer = answer and longest <= SHORT_ANSWER_WORDS
    common = longest if short_answer else _common_words(a, b)
    if 2 * common < longest and common < _WRAPPER_CORE:
        # What the alignment below would conclude, without it (difflib is most of verification's time): the
        # words an alignment can share are at most the words both sides hold, so fewer than half of the longer
        # side cannot be a light edit, and fewer than _WRAPPER_CORE cannot be a shared core inside another
        # template's wrapper either.
        return "mostly different words"
    ops = _opcodes(a, b)
    if short_answer:
        changes = [(a[i1:i2], b[j1:j2]) for tag, i1, i2, j1, j2 in ops if tag != "equal"]
        one_typo = (min(len(a), len(b)) >= 3 and len(changes) == 1
                    and not any(ch.isdigit() for w in changes[0][0] + changes[0][1] for ch in w)
                    and _is_typo(*changes[0]))
        return None if one_typo else "a different short answer"
    why = _edit_difference(a, b, ops, lenient)
    if why is None or answer:
        return why
    # Not an edit of the whole field: maybe another prompt template around the same passage and question.
    # The wrapper is what lies before the first and after the last long shared run; it may differ if the
    # core dominates and the differing text is template text (see is_wrapper).
    anchors = [k for k, (tag, i1, i2, _, _) in enumerate(ops) if tag == "equal" and i2 - i1 >= _ANCHOR_WORDS]
    if not anchors:
        return why
    first, last = ops[anchors[0]], ops[anchors[-1]]
    core_ops = ops[anchors[0]:anchors[-1] + 1]
    shared = sum(i2 - i1 for tag, i1, i2, _, _ in core_ops if tag == "equal")
    # a tail cut at VERIFY_CHARS is where the other side's wrapper pushed the cut, not a difference
    tails = () if a[-1] == CUT and b[-1] == CUT else tuple(t for t in (a[last[2]:], b[last[4]:]) if CUT not in t)
    regions = [r for r in (a[:first[1]], b[:first[3]], *tails) if r]
    if shared < _WRAPPER_CORE or sum(map(len, regions)) > shared:
        return why
    core = max((op for op in core_ops if op[0] == "equal"), key=lambda op: op[2] - op[1])
    if is_wrapper is None or not all(is_wrapper(r, a[core[1]:core[2]]) for r in regions):
        return why
    return _edit_difference(a, b, core_ops, lenient)


def _edit_difference(a: tuple[str, ...], b: tuple[str, ...], ops: Sequence[tuple[str, int, int, int, int]],
                     lenient: bool = False) -> str | None:
    """Why the opcodes ``ops`` of ``a`` against ``b`` are more than a light edit, or ``None``.

    A run of words dropped in one place and added unchanged in another (a sentence moved) is no change."""
    dropped = Counter(a[i1:i2] for tag, i1, i2, _, _ in ops if tag in ("delete", "replace") and i2 - i1 >= _MOVED_RUN)
    added = Counter(b[j1:j2] for tag, _, _, j1, j2 in ops if tag in ("insert", "replace") and j2 - j1 >= _MOVED_RUN)
    moved = dropped & added
    shared = sum(i2 - i1 for tag, i1, i2, _, _ in ops if tag == "equal") + sum(len(r) * c for r, c in moved.items())
    longest = max(ops[-1][2] - ops[0][1], ops[-1][4] - ops[0][3])
    if 2 * shared < longest:
        return "mostly different words"
    changed = 0
    number_typo = False
    swaps: set[tuple[tuple[str, ...], tuple[str, ...]]] = set()
    drops_left, adds_left = Counter(moved), Counter(moved)
    for tag, i1, i2, j1, j2 in ops:
        if tag == "equal":
            continue
        pa, pb = a[i1:i2], b[j1:j2]
        side = drops_left if not pb else adds_left if not pa else None
        if side is not None and side[pa or pb] > 0:
            side[pa or pb] -= 1
            continue
        if "".join(pa) == "".join(pb):
            continue  # a word split or joined
        if any(ch.isdigit() for w in pa + pb for ch in w):
            if (shared >= _MIN_SUBSTITUTION and len(pa) == len(pb) == 1 and _one_char_apart(pa[0], pb[0])
                    and not number_typo):
                number_typo = True
                continue  # one typo in a number inside a long text (2016 -> 206)
            return "a number differs"
        if pa and pb and _is_typo(pa, pb) and (shared >= _MIN_TOLERANT or (
                shared >= _MIN_TYPO_CONTEXT and min(len(w) for w in pa + pb) >= _MIN_TYPO_WORD)):
            continue
        if max(len(pa), len(pb)) >= _NEW_CONTENT_RUN:
            return "different content (a run of 3+ words)"
        if shared < _MIN_SUBSTITUTION and ((pa and pb) or (not lenient and _FUNCTION_WORDS.intersection(pa + pb))):
            return "a different word in a short text"
        if pa and pb:
            if (pa, pb) in swaps:
                return "the same word replaced throughout (another name or entity)"
            if swaps:
                return "two words replaced by others (another example, not an edit)"
            swaps.add((pa, pb))
        changed += max(len(pa), len(pb))
    if shared >= _MIN_TOLERANT:
        allowed = math.ceil(_CHANGED_SHARE * shared)
    else:  # a record and its copy, seen on their own, may differ by one added or dropped word
        allowed = 1 if shared >= _MIN_TYPO_CONTEXT + 1 else 0
    if changed > allowed:
        return f"{changed} of {longest} words differ"
    return None


def _common_words(a: tuple[str, ...], b: tuple[str, ...]) -> int:
    """Words ``a`` and ``b`` hold in common (multiset intersection): at least what any alignment shares."""
    return sum((Counter(a) & Counter(b)).values())


def _opcodes(a: tuple[str, ...], b: tuple[str, ...]) -> list[tuple[str, int, int, int, int]]:
    """difflib's opcodes, with the common prefix and suffix taken off first (most pairs differ in a few
    places of long texts: the matcher then works on the middle only)."""
    limit = min(len(a), len(b))
    p = 0
    while p < limit and a[p] == b[p]:
        p += 1
    q = 0
    while q < limit - p and a[-1 - q] == b[-1 - q]:
        q += 1
    middle = _matcher()(None, a[p:len(a) - q], b[p:len(b) - q], autojunk=False).get_opcodes()
    ops: list[tuple[str, int, int, int, int]] = [("equal", 0, p, 0, p)] if p else []
    for tag, i1, i2, j1, j2 in middle:
        if tag == "equal" and ops and ops[-1][0] == "equal":
            last = ops.pop()
            ops.append(("equal", last[1], i2 + p, last[3], j2 + p))
        else:
            ops.append((tag, i1 + p, i2 + p, j1 + p, j2 + p))
    if q:
        if ops and ops[-1][0] == "equal":
            last = ops.pop()
            ops.append(("equal", last[1], len(a), last[3], len(b)))
        else:
            ops.append(("equal", len(a) - q, len(a), len(b) - q, len(b)))
    return ops


def _one_char_apart(x: str, y: str) -> bool:
    """One character inserted, dropped or replaced."""
    if len(x) < len(y):
        x, y = y, x
    if len(x) - len(y) > 1:
        return False
    i = next((k for k, (p, q) in enumerate(zip(x, y, strict=False)) if p != q), len(y))
    return x[i + 1:] == (y[i + 1:] if len(x) == len(y) else y[i:])


def _is_typo(pa: tuple[str, ...], pb: tuple[str, ...]) -> bool:
    ja, jb = " ".join(pa), " ".join(pb)
    return len(pa) == len(pb) <= 2 and _matcher()(None, ja, jb, autojunk=False).ratio() >= _TYPO_RATIO


@functools.cache
def _matcher() -> type[difflib.SequenceMatcher[Any]]:
    """difflib's ``SequenceMatcher``, compiled: cydifflib is a port of the same algorithm to C++ (the same matching
    blocks, opcodes and ratio: tests/core/test_edits_matcher.py compares them), ~5x faster on verification's word
    sequences. Pure-Python difflib when cydifflib is not installed: the same verdicts, slower."""
    try:
        import cydifflib
    except ImportError:
        return difflib.SequenceMatcher
    return cydifflib.SequenceMatcher  # type: ignore[no-any-return]
