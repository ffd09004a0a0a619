"""What every reader hands on: a :class:`Rejection` for input that cannot be used, :class:`RecordError` for a
record a layout cannot fill, and the bounded raw text a rejection keeps."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

RAW_LIMIT = 2000  # characters of raw input kept in a rejection: enough to see it, bounded for huge lines
# Undecodable bytes read with ``surrogateescape`` become lone surrogates: finding one means invalid UTF-8.
_SURROGATE = re.compile("[\udc80-\udcff]")


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
    return text if len(text) <= RAW_LIMIT else text[:RAW_LIMIT] + f"... [{len(text) - RAW_LIMIT} more chars]"


def raw_json(obj: Any) -> str:
    """A parsed record as the (clipped) JSON text a rejection keeps."""
    try:
        return clip(json.dumps(obj, ensure_ascii=False, default=str))
    except (TypeError, ValueError):
        return clip(repr(obj))


def has_invalid_utf8(text: str) -> bool:
    return _SURROGATE.search(text) is not None
