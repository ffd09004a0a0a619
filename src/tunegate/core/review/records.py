"""What the review sees of a quarantined night: its items (one per quarantined record), selectors, decisions."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunegate.core.schema import finding_detail
from tunegate.exceptions import ReviewError

#: A record's review status: nobody decided yet, released to the fine-tuning side, confirmed as poison.
PENDING, RELEASED, CONFIRMED = "pending", "released", "confirmed"
STATUSES: tuple[str, ...] = (PENDING, RELEASED, CONFIRMED)
#: Audit actions that decide a record, and the status each leaves it in.
RELEASE, CONFIRM, RERUN = "release", "confirm", "rerun"
STATUS_OF: dict[str, str] = {RELEASE: RELEASED, CONFIRM: CONFIRMED}


@dataclass(frozen=True, order=True)
class RecordRef:
    """A record as decisions name it: its id and the hash of its content. A decision applies to a record of a
    later run of the night only when both are the same (the same id with other content is another record)."""

    id: str
    content_sha256: str

    def to_json(self) -> dict[str, str]:
        return {"id": self.id, "content_sha256": self.content_sha256}

    @classmethod
    def from_json(cls, data: Any) -> RecordRef | None:
        if isinstance(data, dict) and isinstance(data.get("id"), str) and isinstance(data.get("content_sha256"), str):
            return cls(data["id"], data["content_sha256"])
        return None


@dataclass(frozen=True)
class Decision:
    """One decision on a record, as its audit line says it."""

    action: str
    by: str
    why: str
    at: str
    line: int
    summary_sha256: str | None = None
    released_file: str | None = None
    override: bool = False

    @classmethod
    def from_entry(cls, entry: dict[str, Any]) -> Decision:
        released = entry.get("released_file")
        return cls(action=str(entry["action"]), by=str(entry.get("by", "")), why=str(entry.get("why", "")),
                   at=str(entry.get("at", "")), line=int(entry.get("line", 0)),
                   summary_sha256=entry.get("summary_sha256"),
                   released_file=released.get("path") if isinstance(released, dict) else None,
                   override=bool(entry.get("override", False)))

    def describe(self) -> str:
        where = f" in {self.released_file}" if self.released_file else ""
        forced = " (override)" if self.override else ""
        return f"{STATUS_OF.get(self.action, self.action)}{forced} by {self.by} at {self.at}{where}: {self.why}"


@dataclass(frozen=True)
class Item:
    """One quarantined record of the night: where it is, why it was set aside, and what was decided on it."""

    row: int  # 0-based position in quarantine.parquet
    id: str
    content_sha256: str
    task: str | None
    reasons: tuple[str, ...]
    score: float
    phrases: tuple[str, ...]
    decisions: tuple[Decision, ...] = field(default=())

    @property
    def ref(self) -> RecordRef:
        return RecordRef(self.id, self.content_sha256)

    @property
    def status(self) -> str:
        return STATUS_OF[self.decisions[-1].action] if self.decisions else PENDING

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "content_sha256": self.content_sha256, "task": self.task, "reasons": list(self.reasons),
                "score": self.score, "phrases": list(self.phrases), "status": self.status,
                "decisions": [d.describe() for d in self.decisions]}


@dataclass(frozen=True)
class Selector:
    """Which quarantined records a command is about: ids, a reason code, a poison phrase, a status (all given
    ones must hold). A phrase matches the ``phrase`` of a finding's evidence, case and surrounding spaces aside."""

    ids: tuple[str, ...] = ()
    reason: str | None = None
    phrase: str | None = None
    status: str | None = None

    def __post_init__(self) -> None:
        if self.status is not None and self.status not in STATUSES:
            raise ReviewError(f"unknown status {self.status!r}; use one of {', '.join(STATUSES)}")
        if self.phrase is not None and not self.phrase.strip():
            raise ReviewError("the phrase to select by is empty")

    @property
    def empty(self) -> bool:
        return not self.ids and self.reason is None and self.phrase is None

    def matches(self, item: Item) -> bool:
        if self.ids and item.id not in self.ids:
            return False
        if self.reason is not None and self.reason not in item.reasons:
            return False
        if self.phrase is not None and _fold(self.phrase) not in {_fold(p) for p in item.phrases}:
            return False
        return self.status is None or item.status == self.status

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.ids:
            out["ids"] = list(self.ids)
        for name in ("reason", "phrase", "status"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        return out

    def describe(self) -> str:
        parts = [f"id {', '.join(self.ids[:5])}{' ...' if len(self.ids) > 5 else ''}"] if self.ids else []
        parts += [f"{name} {getattr(self, name)!r}" for name in ("reason", "phrase", "status")
                  if getattr(self, name) is not None]
        return " and ".join(parts) or "every record"


def _fold(text: str) -> str:
    return " ".join(text.split()).casefold()


def read_items(quarantine: Path, decisions: dict[RecordRef, list[Decision]]) -> list[Item]:
    """The items of ``quarantine.parquet`` (narrow columns only: record text is read by :func:`read_records`)."""
    import pyarrow.parquet as pq

    table = pq.read_table(quarantine, columns=["id", "content_sha256", "task", "reasons", "findings"])
    items = []
    for row, rec in enumerate(table.to_pylist()):
        reasons = tuple(rec["reasons"] or ())
        scores = [float(f["score"]) for f in rec["findings"] or () if f["reason"] in reasons and f["score"] is not None]
        phrases: list[str] = []
        for f in rec["findings"] or ():
            phrase = finding_detail(f).get("phrase")
            if isinstance(phrase, str) and phrase not in phrases:
                phrases.append(phrase)
        ref = RecordRef(rec["id"], rec["content_sha256"])
        items.append(Item(row, rec["id"], rec["content_sha256"], rec["task"], reasons, max(scores, default=0.0),
                          tuple(phrases), tuple(decisions.get(ref, ()))))
    return items


def read_records(quarantine: Path, rows: list[int]) -> list[dict[str, Any]]:
    """The whole quarantined records at these rows (canonical fields, reasons, findings with their evidence
    parsed), in the order given."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(quarantine).take(pa.array(rows, pa.int64()))
    records: list[dict[str, Any]] = table.to_pylist()
    for rec in records:
        rec["findings"] = [{**f, "detail": finding_detail(f)} for f in rec["findings"] or ()]
    return records
