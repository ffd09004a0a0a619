"""Evidence as people read it: rounded numbers, labelled ``key: value`` pairs, clipped text, a phrase marked.

Everything returned here is plain text for the autoescaping template, except :func:`highlight`, which
escapes the record text itself and returns :class:`markupsafe.Markup` with the phrase in ``<mark>``.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from markupsafe import Markup, escape

#: Characters of a record field shown in a table cell (the full record is in quarantine.parquet).
FIELD_CHARS = 400
#: Characters either side of a phrase when a field is cut around it.
PHRASE_WINDOW = 160


def clip(text: Any, n: int = FIELD_CHARS) -> str:
    s = "" if text is None else str(text)
    return s if len(s) <= n else s[:n] + " …"


def number(value: float | int) -> str:
    """``0.98765 -> 0.988``, ``123.456 -> 123.5``, ``1.2e-7 -> 1.2e-07``, ``12345 -> 12,345``: three significant
    figures at most, never a float's full repr."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10_000 else str(value)
    if not math.isfinite(value):
        return str(value)
    magnitude = abs(value)
    if magnitude == 0:
        return "0"
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.1f}".rstrip("0").rstrip(".")
    if magnitude >= 0.001:
        return f"{value:.3f}".rstrip("0").rstrip(".")
    return f"{value:.2g}"


def value_text(value: Any, n: int = 200) -> str:
    """One value of an evidence detail as short text: numbers rounded, mappings as ``k=v`` pairs."""
    if isinstance(value, bool | int | float):
        return number(value)
    if value is None:
        return "none"
    if isinstance(value, dict):
        return clip(", ".join(f"{k}={value_text(v, 60)}" for k, v in value.items()), n)
    if isinstance(value, list | tuple):
        return clip(", ".join(value_text(v, 60) for v in value), n)
    return clip(value, n)


def detail_items(detail: Any) -> list[tuple[str, str]]:
    """A finding's ``detail`` (a JSON object string, or already a mapping) as ``(key, value)`` pairs."""
    if isinstance(detail, str):
        try:
            detail = json.loads(detail) if detail else {}
        except ValueError:
            return [("detail", clip(detail, 300))]
    if not isinstance(detail, dict):
        return [("detail", value_text(detail, 300))]
    return [(str(k), value_text(v)) for k, v in detail.items()]


def evidence_items(finding: dict[str, Any]) -> list[tuple[str, str]]:
    """The evidence of one finding: its check and score first, then its detail."""
    items = [("check", str(finding.get("check", ""))), ("score", value_text(finding.get("score")))]
    return items + detail_items(finding.get("detail", ""))


def phrase_pattern(phrase: str) -> re.Pattern[str]:
    """The phrase as the scans count it: its tokens in order (:func:`~tunegate.core.checks.poison._text.tokens`: words
    and pictographic symbols), any other characters between, any case."""
    from tunegate.core.checks.poison._text import phrase_regex, tokens

    return re.compile(phrase_regex(tokens(phrase)), re.IGNORECASE)


def highlight(text: Any, phrase: str, width: int = PHRASE_WINDOW) -> Markup:
    """``text`` escaped, cut around the phrase's first occurrence, with every occurrence in ``<mark>``."""
    s = "" if text is None else str(text)
    pattern = phrase_pattern(phrase)
    first = pattern.search(s)
    start, end = (max(0, first.start() - width), min(len(s), first.end() + width)) if first else (0, 2 * width)
    piece = s[start:end]
    parts: list[Markup] = [Markup("… ")] if start > 0 else []
    last = 0
    for m in pattern.finditer(piece):
        parts += [escape(piece[last:m.start()]), Markup("<mark>%s</mark>") % m.group(0)]
        last = m.end()
    parts.append(escape(piece[last:]))
    if end < len(s):
        parts.append(Markup(" …"))
    return Markup("").join(parts)


def contains(text: Any, phrase: str) -> bool:
    return bool(text) and phrase_pattern(phrase).search(str(text)) is not None
