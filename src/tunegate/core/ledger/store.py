"""The ledger on disk: one Parquet file per published night, aggregated on read.

``HISTORY_DIR/ledger/nights/<batch id, URL-quoted>.parquet`` holds one row per contributor and per source of the
night (``kind``, ``name``): records ``submitted`` (accepted + quarantined; a rejected line names nobody),
``accepted``, ``quarantined``, ``flagged`` (quarantined for a reason other than the contributor policy's own) and
``reasons`` (quarantined records per reason). A rerun of the night writes the same file again: the night's
contribution is *replaced*, never added twice. The file's metadata keeps when the night was first published
(kept across reruns: first and last seen do not move when a night is rerun) and when it was last.

Writes take the history's writer lock (:func:`tunegate.core.history.writing.writer_lock`) and go through a
temporary sibling and a rename. Confirmed poison is not copied into the nights: it is read, on every load, from the
history's ``known_poison.parquet`` (:mod:`tunegate.core.history.poison`), so a confirmation or an overriding
release shows at once.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from tunegate.core.ledger.stats import Trust, trust
from tunegate.core.reasons import CONTRIBUTOR_BLOCKED, CONTRIBUTOR_NEW_VOLUME

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger(__name__)

LEDGER_DIR = "ledger"
NIGHTS_DIR = "nights"
FORMAT = 1
#: The name a record without a contributor (or a source) counts under: never dropped, never blocked by accident.
UNKNOWN = "(unknown)"
KINDS: tuple[str, ...] = ("contributor", "source")
#: Reasons the contributor policy itself gives: a record held only for them is not evidence against its data.
POLICY_REASONS = frozenset({CONTRIBUTOR_BLOCKED, CONTRIBUTOR_NEW_VOLUME})
_META_KEY = b"tunegate.ledger"


def name_of(value: str | None) -> str:
    return value if value else UNKNOWN


def night_path(history_dir: str | Path, batch_id: str) -> Path:
    return Path(history_dir) / LEDGER_DIR / NIGHTS_DIR / f"{quote(batch_id, safe='')}.parquet"


def _schema() -> pa.Schema:
    import pyarrow as pa

    return pa.schema([("kind", pa.string()), ("name", pa.string()), ("submitted", pa.int64()),
                      ("accepted", pa.int64()), ("quarantined", pa.int64()), ("flagged", pa.int64()),
                      ("reasons", pa.list_(pa.struct([("reason", pa.string()), ("records", pa.int64())])))])


@dataclass
class Counts:
    """What one contributor or source did: in one night, or summed over nights."""

    submitted: int = 0
    accepted: int = 0
    quarantined: int = 0
    flagged: int = 0
    reasons: Counter[str] = field(default_factory=Counter)

    def add(self, other: Counts) -> None:
        self.submitted += other.submitted
        self.accepted += other.accepted
        self.quarantined += other.quarantined
        self.flagged += other.flagged
        self.reasons.update(other.reasons)


Key = tuple[str, str]  # (kind, name)


def night_counts(out_dir: str | Path, summary: dict[str, Any]) -> dict[Key, Counts]:
    """Per contributor and per source, what the gate did with a night: read from its outputs (the accepted, or
    held, records and the quarantine), two or three narrow columns at a time."""
    import pyarrow.parquet as pq

    out = Path(out_dir)
    outputs = summary.get("outputs") or {}
    counts: dict[Key, Counts] = {}
    passed = out / str(outputs.get("accepted") or outputs.get("held") or "accepted.parquet")
    if passed.is_file():
        for batch in pq.ParquetFile(passed).iter_batches(columns=["contributor", "source"], batch_size=65_536):
            for kind in KINDS:
                for name, n in Counter(batch.column(kind).to_pylist()).items():
                    c = counts.setdefault((kind, name_of(name)), Counts())
                    c.submitted += n
                    c.accepted += n
    quarantine = out / str(outputs.get("quarantine") or "quarantine.parquet")
    if quarantine.is_file():
        for batch in pq.ParquetFile(quarantine).iter_batches(columns=["contributor", "source", "reasons"],
                                                             batch_size=65_536):
            data = batch.to_pydict()
            for contributor, source, reasons in zip(data["contributor"], data["source"], data["reasons"],
                                                    strict=True):
                flagged = any(r not in POLICY_REASONS for r in reasons)
                for key in (("contributor", name_of(contributor)), ("source", name_of(source))):
                    c = counts.setdefault(key, Counts())
                    c.submitted += 1
                    c.quarantined += 1
                    c.flagged += flagged
                    c.reasons.update(reasons)
    return counts


def record_night(history_dir: str | Path, out_dir: str | Path, summary: dict[str, Any], *, batch_id: str
                 ) -> dict[str, Any]:
    """Write (or, on a rerun, replace) the night's ledger file from its committed outputs; returns a small summary."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tunegate.core.history.writing import writer_lock
    from tunegate.core.io import atomic_write

    started = time.perf_counter()
    counts = night_counts(out_dir, summary)
    keys = sorted(counts)
    table = pa.table({
        "kind": [k for k, _ in keys], "name": [n for _, n in keys],
        "submitted": [counts[k].submitted for k in keys], "accepted": [counts[k].accepted for k in keys],
        "quarantined": [counts[k].quarantined for k in keys], "flagged": [counts[k].flagged for k in keys],
        "reasons": [[{"reason": r, "records": n} for r, n in sorted(counts[k].reasons.items())] for k in keys],
    }, schema=_schema())
    path = night_path(history_dir, batch_id)
    now = datetime.now(UTC).isoformat(timespec="seconds")
    with writer_lock(Path(history_dir)):
        previous = _night_meta(path) if path.is_file() else None
        meta = {"format": FORMAT, "batch_id": batch_id, "published": now,
                "first_published": (previous or {}).get("first_published") or now, "out_dir": str(out_dir)}
        table = table.replace_schema_metadata({_META_KEY: json.dumps(meta, sort_keys=True).encode()})
        with atomic_write(path) as tmp:
            pq.write_table(table, tmp, compression="zstd")
    contributors = sum(1 for k, _ in keys if k == "contributor")
    seconds = round(time.perf_counter() - started, 3)
    log.info("ledger: night %s: %d contributor(s), %d source(s)%s, %.3f s", batch_id, contributors,
             len(keys) - contributors, " (rerun: replaced)" if previous else "", seconds)
    return {"file": str(path), "contributors": contributors, "sources": len(keys) - contributors,
            "replaced": previous is not None, "seconds": seconds}


def _night_meta(path: Path) -> dict[str, Any]:
    import pyarrow.parquet as pq

    raw = (pq.read_schema(path).metadata or {}).get(_META_KEY)
    meta: dict[str, Any] = json.loads(raw) if raw else {}
    return meta


@dataclass
class Entry:
    """One contributor or source over every night of the ledger."""

    kind: str
    name: str
    counts: Counts = field(default_factory=Counts)
    nights: int = 0
    first_seen: str = ""
    last_seen: str = ""
    confirmed_poison: int = 0

    @property
    def trust(self) -> Trust:
        return trust(self.counts.flagged, self.counts.submitted)

    def to_json(self) -> dict[str, Any]:
        c = self.counts
        return {"kind": self.kind, "name": self.name, "submitted": c.submitted, "accepted": c.accepted,
                "quarantined": c.quarantined, "flagged": c.flagged,
                "reasons": dict(sorted(c.reasons.items(), key=lambda kv: (-kv[1], kv[0]))),
                "confirmed_poison": self.confirmed_poison, "nights": self.nights, "first_seen": self.first_seen,
                "last_seen": self.last_seen, "trust": self.trust.to_json()}


@dataclass
class Ledger:
    """Every night of a history's ledger, aggregated per contributor and per source."""

    dir: Path
    nights: list[str] = field(default_factory=list)  # batch ids, first published first
    entries: dict[Key, Entry] = field(default_factory=dict)

    def get(self, kind: str, name: str) -> Entry | None:
        return self.entries.get((kind, name))

    def of(self, kind: str) -> list[Entry]:
        return [e for (k, _), e in sorted(self.entries.items()) if k == kind]

    def add_night(self, batch_id: str, counts: dict[Key, Counts]) -> None:
        """Fold one night in (nights must be added oldest first: it becomes everyone's last seen)."""
        self.nights.append(batch_id)
        for (kind, name), c in counts.items():
            entry = self.entries.setdefault((kind, name), Entry(kind, name, first_seen=batch_id))
            entry.counts.add(c)
            entry.nights += 1
            entry.last_seen = batch_id


def load_ledger(history_dir: str | Path | None, *, exclude: str | None = None) -> Ledger:
    """The ledger of a history (empty when there is none), without the night ``exclude`` (tonight, on a rerun,
    so it is not counted twice), with the history's confirmed poison folded in. Summed in Arrow: the cost is
    reading the files, not the Python objects (one per contributor and source, whatever the number of nights)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tunegate.exceptions import HistoryError

    if history_dir is None:
        return Ledger(Path())
    ledger = Ledger(Path(history_dir))
    folder = Path(history_dir) / LEDGER_DIR / NIGHTS_DIR
    nights: list[tuple[str, str, pa.Table]] = []
    if folder.is_dir():
        for path in folder.glob("*.parquet"):
            try:
                table = pq.read_table(path)
            except (OSError, pa.ArrowException) as exc:
                raise HistoryError(f"ledger night {path} is unreadable ({exc}): remove it and rerun that night's "
                                   "publish (it writes the file again from the night's committed outputs)") from exc
            raw = (table.schema.metadata or {}).get(_META_KEY)
            meta = json.loads(raw) if raw else {}
            if meta.get("batch_id") and meta["batch_id"] != exclude:
                nights.append((str(meta.get("first_published", "")), str(meta["batch_id"]), table))
    nights.sort(key=lambda n: (n[0], n[1]))
    ledger.nights = [batch_id for _, batch_id, _ in nights]
    if nights:
        _sum_nights(ledger, [table for _, _, table in nights])
    _fold_confirmed(ledger)
    return ledger


def _sum_nights(ledger: Ledger, tables: list[pa.Table]) -> None:
    """Fold the nights' tables (oldest first) into ``ledger.entries``."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    numbered = [t.drop_columns(["reasons"]).replace_schema_metadata(None).append_column(
        "night", pa.array(np.full(t.num_rows, i, dtype=np.int32))) for i, t in enumerate(tables)]
    sums = pa.concat_tables(numbered).group_by(["kind", "name"]).aggregate(
        [(c, "sum") for c in ("submitted", "accepted", "quarantined", "flagged")]
        + [("night", "min"), ("night", "max"), ("night", "count")]).to_pydict()
    for i, (kind, name) in enumerate(zip(sums["kind"], sums["name"], strict=True)):
        counts = Counts(submitted=int(sums["submitted_sum"][i]), accepted=int(sums["accepted_sum"][i]),
                        quarantined=int(sums["quarantined_sum"][i]), flagged=int(sums["flagged_sum"][i]))
        ledger.entries[(kind, name)] = Entry(kind, name, counts, nights=int(sums["night_count"][i]),
                                             first_seen=ledger.nights[sums["night_min"][i]],
                                             last_seen=ledger.nights[sums["night_max"][i]])
    parts = []
    for t in tables:  # the reasons lists, flattened to (kind, name, reason, records) rows
        column = t.column("reasons")
        parents = pc.list_parent_indices(column)
        flat = pc.list_flatten(column)
        parts.append(pa.table({"kind": t.column("kind").take(parents), "name": t.column("name").take(parents),
                               "reason": pc.struct_field(flat, "reason"), "records": pc.struct_field(flat, "records")}))
    reasons = pa.concat_tables(parts).group_by(["kind", "name", "reason"]).aggregate([("records", "sum")]).to_pydict()
    for kind, name, reason, n in zip(reasons["kind"], reasons["name"], reasons["reason"], reasons["records_sum"],
                                     strict=True):
        ledger.entries[(kind, name)].counts.reasons[reason] = int(n)


def _fold_confirmed(ledger: Ledger) -> None:
    from tunegate.core.history.poison import load_known_poison

    confirmed = load_known_poison(ledger.dir)
    if confirmed is None:
        return
    for kind in KINDS:
        for name, n in Counter(confirmed.column(kind).to_pylist()).items():
            entry = ledger.entries.setdefault((kind, name_of(name)), Entry(kind, name_of(name)))
            entry.confirmed_poison += n
