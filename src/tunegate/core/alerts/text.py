"""Text hygiene for alert content: data (possibly an attacker's) made one clean line, and cut to a size."""

from __future__ import annotations

import re

# control characters, zero-width and bidi marks, word joiner, BOM and Unicode tag characters: all invisible
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060\u2066-\u2069\ufeff"
                      "\U000e0000-\U000e007f]")
_SPACE = re.compile(r"\s+")


def clean(text: str) -> str:
    """One line: control and bidi characters removed, whitespace runs collapsed."""
    return _SPACE.sub(" ", _CONTROL.sub("", text)).strip()


def clean_multiline(text: str) -> str:
    lines = [_SPACE.sub(" ", _CONTROL.sub("", line)).rstrip() for line in text.splitlines()]
    return "\n".join(line for line in lines if line.strip())


def cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:max(0, limit - 1)].rstrip() + "…"
