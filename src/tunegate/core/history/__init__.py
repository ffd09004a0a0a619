"""The history: a persisted FAISS index of every record accepted so far, for cross-night checks.

The near-duplicate check compares a new batch with the history (yesterday's accepted records are today's
duplicates); the outlier check uses it as the trusted reference. Checks only *read* it. It grows only
through :func:`update_history`, which the publish step calls after the gate accepted a batch (verdict
``pass`` or ``quarantine``), so nightly cost grows with the new records, not with all data ever seen:
only the new records are embedded, and an IVF history takes them as a *segment* (an index of tonight's
records on the base's trained cells, and their id map): the base and earlier segments are neither read nor
rewritten. Readers merge the segments into one index in memory (FAISS ``merge_from``: positions follow on).
At :data:`MAX_SEGMENTS` segments, on a re-training (the history grew :data:`RETRAIN_GROWTH` times since its
cells were trained), on a rerun's replacement and for a flat history, the update writes one new base instead.

Layout of ``HISTORY_DIR`` (kept next to the curated data)::

    manifest.json            the commit point: generation, embedding spec, counts, file sha256s, and
                             every accepted batch added (source path + sha256), so it can be rebuilt
    index-<generation>.faiss the base: flat (exact) up to ``flat_max`` records, IVF-Flat above; or a
                             segment (IVF-Flat, one night's records), as the manifest says
    ids-<generation>.parquet the same file's positions -> id, content_sha256, task, source, contributor, batch
    cells-<generation>.faiss the base's trained cells, no vectors (IVF): what a night's segment is built on
    known_poison.parquet     records confirmed as poison (``tunegate review confirm``): later nights
                             quarantine their copies as ``known_poison`` (:mod:`.poison`)
    audit.jsonl              the review decisions that changed this history (append-only)

An update writes the next generation's files (temp file + rename), then the manifest (temp + rename),
then deletes the files the new manifest no longer lists: a crash at any point leaves the previous generation
intact. One writer at a time: an OS-level lock (``filelock``) that dies with its holder, so a killed update
never leaves a lock for a person to delete.

Batches are named (``batch_id``: the night's date under Airflow, the output folder's name in the CLI).
Adding a batch whose name is already there *replaces* that batch's contribution (a rerun of a night),
and the checks of a rerun compare against the history *without* their own earlier contribution, so a
rerun never finds its own records as near-duplicates of themselves. A
missing or damaged file (checked against the manifest's sha256) is a :class:`HistoryError` that says how
to recover: :func:`rebuild_history` re-embeds the accepted batches the manifest lists. Nothing is ever
treated as an empty history except a directory that does not exist or is empty.

Modules: :mod:`.reading` (load, verify, search: what the checks use) and :mod:`.writing` (update,
replace a rerun's batch, rebuild: what the publish step and ``tunegate history`` use).
"""

from __future__ import annotations

from tunegate.core.history.reading import (
    FORMAT,
    ID_COLUMNS,
    MANIFEST,
    History,
    describe_history,
    open_history,
    past_nights,
)
from tunegate.core.history.writing import (
    LOCK,
    LOCK_TIMEOUT,
    MAX_SEGMENTS,
    RETRAIN_GROWTH,
    batch_statistics,
    rebuild_history,
    switched_spec,
    update_history,
)
from tunegate.exceptions import HistoryConflict, HistoryError

__all__ = [
    "FORMAT",
    "ID_COLUMNS",
    "LOCK",
    "LOCK_TIMEOUT",
    "MANIFEST",
    "MAX_SEGMENTS",
    "RETRAIN_GROWTH",
    "History",
    "HistoryConflict",
    "HistoryError",
    "batch_statistics",
    "describe_history",
    "open_history",
    "past_nights",
    "rebuild_history",
    "switched_spec",
    "update_history",
]
