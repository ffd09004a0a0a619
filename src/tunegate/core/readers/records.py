"""What every reader hands on: a :class:`Rejection` for input that cannot be used, :class:`RecordError` for a
record a layout cannot fill, and the bounded raw text a rejection keeps."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

RAW_LIMIT = 2000  # characters of raw input kept in a rejection: enough to see it, bounded for huge lines
# Undecodable bytes read with ``surrogateescape`` become lone surrogates (U+DC80..U+DCFF), and a JSON escape
# such as ``"\ud800"`` decodes to one: either way the text is not valid UTF-8 and cannot be written out.
_SURROGATE = re.compile("[\ud800-\udfff]")


class RecordError(ValueError):
    """One record cannot be normalized; the message names the field and the problem."""


@dataclass(frozen=True)
class Rejection:
    source_file: str
    source_line: int
    raw: str
    error: str

    def to_json(self) -> dict[str, Any]:
        return {"source_file": self.source_file, "source_line": self.source_line, "raw": self.raw, "error": self.error}


#: What a reader yields before normalization: ``(line or row, raw record)``, or a rejection.
RawItem = tuple[int, Any] | Rejection


def clip(text: str) -> str:
    """``text`` bounded to :data:`RAW_LIMIT` characters, with lone surrogates spelled out (``\\xff`` for an
    undecodable byte, ``\\ud800`` for a surrogate escape) so that it can always be written as UTF-8."""
    text = text if len(text) <= RAW_LIMIT else text[:RAW_LIMIT] + f"... [{len(text) - RAW_LIMIT} more chars]"
    return _SURROGATE.sub(_spell_surrogate, text)


def _spell_surrogate(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"\\u{code:04x}"


def raw_json(obj: Any) -> str:
    """A parsed record as the (clipped) JSON text a rejection keeps."""
    try:
        return clip(json.dumps(obj, ensure_ascii=False, default=str))
    except (TypeError, ValueError, RecursionError):
        try:
            return clip(repr(obj))
        except RecursionError:  # nested too deep even for repr
            return f"<{type(obj).__name__} nested too deep to show>"


def has_invalid_utf8(text: str) -> bool:
    return _SURROGATE.search(text) is not None
