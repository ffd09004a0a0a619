"""Record size: a text field longer than the policy's limit sets its record aside, before anything reads it.

One 50 MB ``output`` cost a default scan about 2.7 GB of memory (GX validated whole-text pandas frames, the
poison scans lower-cased and split the whole text): what one record costs was unbounded. This check reads
only the *lengths* of the text fields, batch by batch (``pyarrow.compute.utf8_length``), never the text, and
flags every record with a field (or, in ``messages``, a chat turn) over ``max_field_chars`` with reason
``oversized_field``. The other checks then need at most the limit (plus one character) of any field: what
is longer is quarantined here already (the GX suites clip their frames so, see :data:`CLIP_MARGIN`).

The default, 200,000 characters, is about 9x the longest field of the clean corpora the gate is tested on
(max 22,443 characters: a P3/T0 prompt; 99.99th percentile 11,834; 265k fields of 10 corpora): long enough
for long-context data, small enough that every page and scan of a record stays in the megabytes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar

from tunegate.core.checks.base import CanonicalBatch, Check, CheckResult, Finding
from tunegate.core.checks.config import CheckConfig, integer

log = logging.getLogger(__name__)

#: The text fields whose length is bounded; ``messages`` (a chat record's turns) counts its longest turn.
TEXT_FIELDS: tuple[str, ...] = ("instruction", "input", "output")
MESSAGES = "messages"
#: The default limit, in characters (Unicode code points) per field.
DEFAULT_MAX_FIELD_CHARS = 200_000
#: Characters kept past the limit where another check clips a field: a clipped field still reads as "over it".
CLIP_MARGIN = 1


@dataclass(frozen=True)
class RecordSizeConfig(CheckConfig):
    """``max_field_chars``: the longest ``instruction``, ``input`` or ``output`` a record may have, in characters."""

    check: ClassVar[str] = "record_size"

    max_field_chars: int = DEFAULT_MAX_FIELD_CHARS

    def __post_init__(self) -> None:
        integer(self, "max_field_chars", minimum=1, maximum=2**31 - 1)


class RecordSizeCheck(Check):
    """Flag every record with a text field longer than ``max_field_chars``.

    Reason ``oversized_field``, one finding per record; the detail names the longest offending field, its
    length and the limit (and every field over it). Score: length / limit. Memory: one batch of lengths
    (8 bytes a row) plus the Arrow buffers of one batch of text, never a Python string of it.
    """

    name = "record_size"
    config_class: ClassVar[type[CheckConfig]] = RecordSizeConfig
    config: RecordSizeConfig

    def run(self, batch: CanonicalBatch) -> CheckResult:
        import pyarrow.compute as pc

        limit = self.config.max_field_chars
        fields = [f for f in (*TEXT_FIELDS, MESSAGES) if f in batch.columns]
        longest = {f: 0 for f in fields}
        over: dict[int, dict[str, int]] = {}  # row -> field -> length, for the rows over the limit only
        for f in fields:  # one column at a time: only one field's text is ever decoded at once
            for start, rb in batch.iter_batches(columns=[f], batch_size=10_000):
                column = rb.column(0)
                if f == MESSAGES:  # one length per turn, and the row each turn belongs to
                    parents = pc.list_parent_indices(column)
                    column = pc.struct_field(pc.list_flatten(column), "content")
                lengths = pc.fill_null(pc.utf8_length(column), 0)
                if len(lengths):
                    longest[f] = max(longest[f], int(pc.max(lengths).as_py() or 0))
                hits = pc.indices_nonzero(pc.greater(lengths, limit))
                if len(hits):
                    rows = (pc.take(parents, hits) if f == MESSAGES else hits).to_pylist()
                    for row, n in zip(rows, pc.take(lengths, hits).to_pylist(), strict=True):
                        sizes = over.setdefault(start + row, {})
                        sizes[f] = max(sizes.get(f, 0), int(n))
        findings: list[Finding] = []
        for row in sorted(over):
            sizes = over[row]
            field = max(sizes, key=lambda f: sizes[f])
            findings.append(Finding(row, "oversized_field", round(sizes[field] / limit, 3),
                                    {"field": field, "length": sizes[field], "limit": limit,
                                     "fields": dict(sorted(sizes.items()))}))
        log.info("record_size: %d of %d records have a field over %d characters", len(findings), batch.num_rows,
                 limit)
        return CheckResult(self.name, findings, metrics={"records": batch.num_rows, "max_field_chars": limit,
                                                         "oversized": len(findings), "longest": longest})


def clip_fields(table: Any) -> Any:
    """The table with each text field, and each chat turn, cut to the record-size limit plus one character.

    A longer field is quarantined by ``record_size`` (``oversized_field``) already; the expectations see what
    is needed to judge it (a cut field is still over any length limit up to that one), and GX's pandas frames,
    its regexes and its unexpected-value lists never hold a 50 MB string several times over.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    keep = DEFAULT_MAX_FIELD_CHARS + CLIP_MARGIN
    for name in (*TEXT_FIELDS, MESSAGES):
        i = table.schema.get_field_index(name)
        if i < 0:
            continue
        column = table.column(i)  # chunked: clipped chunk by chunk, nothing copied where nothing is over
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            if len(column) and (pc.max(pc.utf8_length(column)).as_py() or 0) > keep:
                table = table.set_column(i, name, pc.utf8_slice_codeunits(column, 0, keep))
        elif pa.types.is_list(column.type) and pa.types.is_struct(column.type.value_type) and \
                column.type.value_type.get_field_index("content") >= 0:
            chunks = [_clip_turns(chunk, keep) for chunk in column.chunks]
            if any(new is not old for new, old in zip(chunks, column.chunks, strict=True)):
                table = table.set_column(i, name, pa.chunked_array(chunks, column.type))
    return table


def _clip_turns(column: Any, keep: int) -> Any:
    """A ``list<struct<role, content>>`` array with each turn's content cut to ``keep`` characters (the same
    array when none is longer)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    turns = column.values  # the turns of the rows, in order (the offsets say which row each belongs to)
    j = turns.type.get_field_index("content")
    content = turns.field(j)
    if not len(content) or (pc.max(pc.utf8_length(content)).as_py() or 0) <= keep:
        return column
    fields = [turns.field(k) if k != j else pc.utf8_slice_codeunits(content, 0, keep)
              for k in range(turns.type.num_fields)]
    clipped = pa.StructArray.from_arrays(fields, fields=list(turns.type), mask=turns.is_null())
    return pa.ListArray.from_arrays(column.offsets, clipped, mask=column.is_null())
