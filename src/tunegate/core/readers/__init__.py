"""Readers: turn instruction-tuning data, as users hold it, into canonical records, streaming, with every
unusable record turned into a :class:`Rejection`.

Three independent choices, held in one :class:`InputOptions`:

* the *container* (how records are stored): ``jsonl``, ``json`` (an array, or a Super-NaturalInstructions
  task file), ``parquet``, ``csv``, ``tsv``, ``arrow`` (Arrow IPC, stream or file format) or ``hf-disk``
  (a ``datasets`` ``save_to_disk`` folder, a ``Dataset`` or a ``DatasetDict``);
* the *layout* (which fields a record has): ``alpaca``, ``dolly``, ``openai``, ``sharegpt``, ``superni``
  or ``canonical`` (tunegate's own output);
* a *column map* renaming the user's columns onto canonical fields (``prompt`` -> ``instruction``), applied
  before the layout reads a record.

``auto`` detects the container from the suffix and the first bytes, and the layout from the keys of the
first records (up to 100, after the column map; records that do not fit it are rejected). Errors that
concern the whole file (missing, empty, unknown format, a FIFO or device, a container unreadable from the
start) raise :class:`~tunegate.exceptions.InputError`; errors that concern one record never do, and damage
part-way through a file keeps the records before it and rejects the rest as one entry.

One module per job:

* :mod:`.options` -- :class:`InputOptions`, the container/layout/format names, :func:`parse_columns`;
* :mod:`.records` -- :class:`Rejection`, :class:`RecordError`, the raw text a rejection keeps;
* :mod:`.json_containers` -- JSON Lines, streamed JSON arrays, Super-NaturalInstructions task files;
* :mod:`.containers` -- Parquet, Arrow IPC, CSV/TSV, and detecting the container from the first bytes;
* :mod:`.layouts` -- raw record -> canonical fields, layout detection, the column map;
* :mod:`.read` -- :func:`read_file`: one file or ``save_to_disk`` folder -> records and rejections.
"""

from __future__ import annotations

from tunegate.core.readers.layouts import detect_record_format, normalize
from tunegate.core.readers.options import (
    CANONICAL_FIELDS,
    CONTAINERS,
    FORMATS,
    LAYOUTS,
    RECORD_FORMATS,
    InputOptions,
    parse_columns,
    resolve_options,
)
from tunegate.core.readers.read import read_file
from tunegate.core.readers.records import RecordError, Rejection

__all__ = [
    "CANONICAL_FIELDS",
    "CONTAINERS",
    "FORMATS",
    "LAYOUTS",
    "RECORD_FORMATS",
    "InputOptions",
    "RecordError",
    "Rejection",
    "detect_record_format",
    "normalize",
    "parse_columns",
    "read_file",
    "resolve_options",
]
