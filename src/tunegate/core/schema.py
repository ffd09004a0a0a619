"""The canonical record schema every reader normalizes into.

One row per instruction record. ``instruction``/``input``/``output`` are always strings (possibly
empty: emptiness is a *quality* finding for the checks, not a parse error). Chat formats keep the full
conversation in ``messages`` and project its first user turn and the assistant reply to it onto
``instruction``/``output`` so every check can treat all formats alike.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa

#: Columns of the canonical schema, in order.
CANONICAL_COLUMNS: tuple[str, ...] = (
    "id",
    "instruction",
    "input",
    "output",
    "task",
    "source",
    "contributor",
    "messages",
    "content_sha256",
    "source_file",
    "source_line",
)

#: The column checks use to address a record: its 0-based position in the canonical table.
ROW = "row"


def canonical_schema() -> pa.Schema:
    import pyarrow as pa

    message = pa.struct([("role", pa.string()), ("content", pa.string())])
    return pa.schema(
        [
            pa.field("id", pa.string(), nullable=False),
            pa.field("instruction", pa.string(), nullable=False),
            pa.field("input", pa.string(), nullable=False),
            pa.field("output", pa.string(), nullable=False),
            pa.field("task", pa.string()),
            pa.field("source", pa.string()),
            pa.field("contributor", pa.string()),
            pa.field("messages", pa.list_(message)),
            pa.field("content_sha256", pa.string(), nullable=False),
            pa.field("source_file", pa.string(), nullable=False),
            # 1-based line of the record in JSONL/JSON/CSV input; 1-based position for Parquet rows
            # and Super-NaturalInstructions instances.
            pa.field("source_line", pa.int64(), nullable=False),
        ]
    )


def quarantine_schema() -> pa.Schema:
    """Canonical schema plus the reasons a record was set aside and the evidence behind them."""
    import pyarrow as pa

    finding = pa.struct(
        [
            ("check", pa.string()),
            ("reason", pa.string()),
            ("score", pa.float64()),
            ("detail", pa.string()),  # JSON object: evidence specific to the check
        ]
    )
    return canonical_schema().append(pa.field("reasons", pa.list_(pa.string()), nullable=False)).append(
        pa.field("findings", pa.list_(finding), nullable=False)
    )


def content_sha256(instruction: str, input_: str, output: str, messages: list[dict[str, str]] | None) -> str:
    """Hash of what the model would be trained on; exact duplicates share it.

    JSON encoding keeps field boundaries unambiguous (``"ab","c"`` differs from ``"a","bc"``).
    """
    payload: list[Any] = [instruction, input_, output]
    if messages:
        payload.append([[m["role"], m["content"]] for m in messages])
    data = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return hashlib.sha256(data).hexdigest()


def finding_detail(finding: dict[str, Any]) -> dict[str, Any]:
    """The ``detail`` of a quarantine finding (a JSON object in a string column) as a dict: ``{}`` when empty,
    ``{"text": ...}`` when it is not JSON, ``{"value": ...}`` when it is JSON but not an object."""
    raw = finding.get("detail")
    if isinstance(raw, dict):
        return raw
    try:
        parsed = json.loads(raw) if raw else {}
    except ValueError:
        return {"text": raw}
    return parsed if isinstance(parsed, dict) else {"value": parsed}


#: Unicode categories written as ``\uXXXX`` by :func:`visible`: controls (an ANSI escape), format characters (a
#: right-to-left override, zero-width), surrogates, private use, line and paragraph separators.
INVISIBLE_CATEGORIES = ("Cc", "Cf", "Cs", "Co", "Zl", "Zp")


def visible(text: object, keep: str = "\n\t") -> str:
    """Record text as a terminal or a page shows it safely: every character of :data:`INVISIBLE_CATEGORIES`
    except those in ``keep`` is written as ``\\uXXXX`` instead of acting on the terminal or hiding on the page."""
    import unicodedata

    return "".join(c if c in keep or unicodedata.category(c) not in INVISIBLE_CATEGORIES else f"\\u{ord(c):04x}"
                   for c in str(text))
