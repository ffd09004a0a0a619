"""The review of a quarantined night: list, show, release to the fine-tuning side, confirm as poison.

:class:`Review` is the whole API the CLI (``tunegate review``) and an Airflow operator call: ``Review.open(dir)``
reads a committed result set and its audit log; ``.list()``/``.show()`` read; ``.release()``/``.confirm()`` decide
and return a :class:`DecisionResult` (the released file, the records, the counts) for the caller to print or to
emit as an Asset event. The state (which record is pending, released, confirmed) is derived from the audit log
every time; there is no second state file to drift from it.

Decisions take the run directory's lock (the one a scan of that directory holds), re-read the state under it, act,
and append one audit line last: the line is the commit. A released file that no audit line names (a release
killed before its line was written) was never published; the next decision removes it.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tunegate.core.outputs import ACCEPTED_FILE, LOCK_FILE, QUARANTINE_FILE, SUMMARY_FILE, load_committed
from tunegate.core.review.audit import AUDIT_FILE, AuditLog, append_entry, read_log, utc_now
from tunegate.core.review.records import (
    CONFIRM,
    CONFIRMED,
    RELEASE,
    RELEASED,
    Decision,
    Item,
    RecordRef,
    Selector,
    read_items,
    read_records,
)
from tunegate.exceptions import ReviewError, TunegateError

log = logging.getLogger(__name__)

#: Follow-up files of released records, one per release: ``released/<seq>-<UTC time>.parquet``.
RELEASED_DIR = "released"
#: Seconds a decision waits for the run directory's lock (a scan of the night holds it while it runs).
LOCK_TIMEOUT = 60.0


@dataclass(frozen=True)
class DecisionResult:
    """What a release or a confirmation did. ``records``: the records decided now; ``skipped``: selected records
    left alone, each with why; ``entry``: the audit line written (``None``: nothing to do, nothing written)."""

    action: str
    dir: Path
    records: tuple[RecordRef, ...] = ()
    skipped: tuple[tuple[RecordRef, str], ...] = ()
    released_file: Path | None = None
    released_sha256: str | None = None
    history_dir: Path | None = None
    history_changed: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    entry: dict[str, Any] | None = None

    @property
    def count(self) -> int:
        return len(self.records)

    def message(self) -> str:
        """A few lines for a person: what was done, what was left alone and why."""
        done = "released" if self.action == RELEASE else "confirmed as poison"
        lines = [f"{self.count} record(s) {done} in {self.dir}" if self.records
                 else f"nothing to {self.action}: every selected record is skipped"]
        if self.released_file is not None:
            lines.append(f"  released file: {self.released_file} (sha256 {self.released_sha256})")
        if self.history_dir is not None and self.action == CONFIRM:
            lines.append(f"  known poison of history {self.history_dir}: +{len(self.history_changed)} record(s)")
        elif self.history_dir is not None and self.history_changed:
            lines.append(f"  known poison of history {self.history_dir}: -{len(self.history_changed)} record(s) "
                         "(released with --override)")
        for ref, why in self.skipped[:20]:
            lines.append(f"  skipped {ref.id}: {why}")
        if len(self.skipped) > 20:
            lines.append(f"  ... and {len(self.skipped) - 20} more skipped")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {"action": self.action, "dir": str(self.dir), "count": self.count,
                "records": [r.to_json() for r in self.records],
                "skipped": [{**r.to_json(), "why": why} for r, why in self.skipped],
                "released_file": str(self.released_file) if self.released_file else None,
                "released_sha256": self.released_sha256,
                "history_dir": str(self.history_dir) if self.history_dir else None,
                "history_changed": list(self.history_changed), "notes": list(self.notes)}


#: Annotations inside :class:`Review`, whose ``list`` method hides the builtin there.
Items = list[Item]
Notes = list[str]
Records = list[dict[str, Any]]


@dataclass
class Review:
    """A committed night open for review. Build it with :meth:`open`."""

    dir: Path
    summary: dict[str, Any]
    summary_sha256: str
    items: Items
    audit: AuditLog
    warnings: Notes = field(default_factory=lambda: [])

    @classmethod
    def open(cls, out_dir: str | Path) -> Review:
        """Read the committed result set of ``out_dir`` (a :class:`TunegateError` naming the directory when it
        has none) and its audit log."""
        out = Path(out_dir)
        summary = load_committed(out)
        summary_sha256 = hashlib.sha256((out / SUMMARY_FILE).read_bytes()).hexdigest()
        audit = read_log(out / AUDIT_FILE)
        decisions: dict[RecordRef, list[Decision]] = {}
        for entry in audit.entries:
            if entry["action"] in (RELEASE, CONFIRM):
                decision = Decision.from_entry(entry)
                for raw in entry.get("records") or ():
                    ref = RecordRef.from_json(raw)
                    if ref is not None:
                        decisions.setdefault(ref, []).append(decision)
        quarantine = summary.get("outputs", {}).get("quarantine", QUARANTINE_FILE)
        items = read_items(out / quarantine, decisions)
        return cls(out, summary, summary_sha256, items, audit, list(audit.warnings))

    @property
    def batch_id(self) -> str:
        history = self.summary.get("history") or {}
        return str(history.get("batch_id") or self.dir.resolve().name)

    @property
    def verdict(self) -> str:
        return str(self.summary.get("verdict"))

    @property
    def history_dir(self) -> Path | None:
        """The history the night was scanned with and added to (``None``: none, or a halted night)."""
        history = self.summary.get("history") or {}
        return Path(str(history["dir"])) if history.get("dir") else None

    def list(self, selector: Selector | None = None) -> Items:
        return [i for i in self.items if selector is None or selector.matches(i)]

    def select(self, selector: Selector) -> Items:
        """The items a decision acts on; an unknown id or a selector that matches nothing is a :class:`ReviewError`."""
        if selector.empty:
            raise ReviewError("say which records: --id ID (repeatable), --reason REASON or --phrase PHRASE")
        known = {i.id for i in self.items}
        unknown = [i for i in selector.ids if i not in known]
        if unknown:
            raise ReviewError(f"{self.dir}: no quarantined record with id {', '.join(map(repr, unknown[:5]))} "
                              f"(see `tunegate review list {self.dir}`)")
        chosen = self.list(selector)
        if not chosen:
            raise ReviewError(f"{self.dir}: no quarantined record matches {selector.describe()} "
                              f"(see `tunegate review list {self.dir}`)")
        return chosen

    def show(self, record_id: str) -> Records:
        """The whole quarantined record(s) with this id (one, unless the input reused an id): every field, the
        reasons, each finding with its evidence, the status and every decision."""
        chosen = [i for i in self.items if i.id == record_id]
        if not chosen:
            raise ReviewError(f"{self.dir}: no quarantined record with id {record_id!r} "
                              f"(see `tunegate review list {self.dir}`)")
        records = read_records(self._quarantine, [i.row for i in chosen])
        return [{**rec, "status": item.status, "decisions": [d.describe() for d in item.decisions]}
                for rec, item in zip(records, chosen, strict=True)]

    @property
    def _quarantine(self) -> Path:
        return self.dir / str(self.summary.get("outputs", {}).get("quarantine", QUARANTINE_FILE))

    # ------------------------------------------------------------------ decisions

    def release(self, selector: Selector, *, by: str, why: str, override: bool = False,
                history_dir: str | Path | None = None, request: str | None = None) -> DecisionResult:
        """Publish the selected records to the fine-tuning side as a new follow-up file
        ``released/<seq>-<time>.parquet`` (canonical schema, written atomically), then record the decision.

        Refused for a halted night (it has no accepted set to follow up). A record released before (in this run
        or an earlier run of the night, same id and content) is skipped, and so is one whose content is already
        published (in ``accepted.parquet``, an earlier released file, or twice in this selection): nothing is
        published twice. A record confirmed as poison is refused unless ``override``; then it also leaves the
        known poison of ``history_dir`` (default: the history the night was added to). With a history, the
        released file joins it as batch ``<night>+released-<seq>``: later nights compare against its records.

        ``request`` (optional) names who asked, as the caller knows it (an Airflow task instance): it is kept in
        the audit line, and :meth:`decision_of` finds the line again, so a retried request can tell that its
        decision was already made.
        """
        _require_person(by, why)
        with review_lock(self.dir):
            return Review.open(self.dir)._release(selector, by=by, why=why, override=override,
                                                  history_dir=history_dir, request=request)

    def confirm(self, selector: Selector, *, by: str, why: str, override: bool = False,
                history_dir: str | Path | None = None, request: str | None = None) -> DecisionResult:
        """Confirm the selected records as poison: they stay out of training, and they join the known poison of
        ``history_dir`` (default: the history the night was added to), so that a later night scanned with that
        history quarantines their copies (``known_poison``). A released record is refused unless ``override``
        (it was published already: tell the fine-tuning side; tunegate cannot take it back)."""
        _require_person(by, why)
        with review_lock(self.dir):
            return Review.open(self.dir)._confirm(selector, by=by, why=why, override=override,
                                                  history_dir=history_dir, request=request)

    def _release(self, selector: Selector, *, by: str, why: str, override: bool,
                 history_dir: str | Path | None, request: str | None = None) -> DecisionResult:
        import pyarrow.parquet as pq

        if self.verdict == "halt":
            raise ReviewError(f"{self.dir}: the night halted, so nothing of it is published and there is no accepted "
                              "set to follow up; fix what halted it and rerun the night, then review its quarantine")
        self._remove_unrecorded_releases()
        chosen = self.select(selector)
        self._refuse_conflicts(chosen, CONFIRMED, "confirmed as poison", override,
                               "to release them anyway (they leave the history's known poison)")
        published = self._published_contents()
        accepted = self.dir / self.summary.get("outputs", {}).get("accepted", ACCEPTED_FILE)
        if accepted.is_file():
            for digest in pq.read_table(accepted, columns=["content_sha256"]).column(0).to_pylist():
                published.setdefault(digest, ACCEPTED_FILE)
        todo: Items = []
        skipped: list[tuple[RecordRef, str]] = []
        for item in chosen:
            if item.status == RELEASED:
                skipped.append((item.ref, f"already {item.decisions[-1].describe()}"))
            elif item.content_sha256 in published:
                skipped.append((item.ref, f"its content is already published ({published[item.content_sha256]})"))
            else:
                todo.append(item)
                published[item.content_sha256] = f"record {item.id}, released now"
        if not todo:
            return DecisionResult(RELEASE, self.dir, skipped=tuple(skipped))
        overridden = [i for i in todo if i.status == CONFIRMED]
        hdir = Path(history_dir) if history_dir is not None else self.history_dir
        removed: Notes = []
        if overridden and hdir is not None:
            from tunegate.core.history.poison import remove_known_poison

            removed = remove_known_poison(hdir, [i.content_sha256 for i in overridden])
        notes = []
        if overridden and hdir is None:
            notes.append("no history given: a known-poison list that holds these records still quarantines "
                         "their copies (pass --history HDIR to take them out)")
        path, digest, size = self._write_released(todo)
        rel = path.relative_to(self.dir).as_posix()
        entry = self._entry(RELEASE, todo, by=by, why=why, selector=selector, override=bool(overridden),
                            released_file={"path": rel, "sha256": digest, "bytes": size, "records": len(todo)},
                            history={"dir": str(hdir), "known_poison_removed": removed} if removed else None,
                            request=request)
        written = append_entry(self.dir / AUDIT_FILE, entry)  # the commit: from here the file is published
        if hdir is not None:
            notes.append(self._join_history(hdir, path, written))
        log.info("review: %d record(s) of %s released by %s in %s", len(todo), self.dir, by, rel)
        return DecisionResult(RELEASE, self.dir, tuple(i.ref for i in todo), tuple(skipped), path, digest,
                              hdir, tuple(removed), tuple(notes), written)

    def _join_history(self, hdir: Path, path: Path, written: dict[str, Any]) -> str:
        """Add a released file to the history as its own batch ``<night>+released-<seq>``, so that a later night
        (or a rerun of this one) finds its records as near-duplicates and never publishes them again. After the
        commit: a failure here leaves the release valid and the history one batch short (rerun nothing; tomorrow's
        copies of these records are then not caught as near-duplicates), never a history naming an unpublished
        file."""
        from tunegate.core.history import update_history

        name = f"{self.batch_id}+released-{path.name.split('-')[0]}"
        result = update_history(hdir, path, batch_id=name)
        append_entry(hdir / AUDIT_FILE, {**written, "dir": str(self.dir.resolve()),
                                         "history_batch": name, "history_added": result.get("added", 0)})
        return f"history {hdir}: +{result.get('added', 0)} record(s) as batch {name}"

    def _confirm(self, selector: Selector, *, by: str, why: str, override: bool,
                 history_dir: str | Path | None, request: str | None = None) -> DecisionResult:
        chosen = self.select(selector)
        self._refuse_conflicts(chosen, RELEASED, "released to the fine-tuning side", override,
                               "to confirm them anyway (tell the fine-tuning side: a release is not taken back)")
        todo = [i for i in chosen if i.status != CONFIRMED]
        skipped = [(i.ref, f"already {i.decisions[-1].describe()}") for i in chosen if i.status == CONFIRMED]
        hdir = Path(history_dir) if history_dir is not None else self.history_dir
        notes = []
        added: Notes = []
        at = utc_now()
        if hdir is not None:
            from tunegate.core.history.poison import add_known_poison

            # the records already confirmed too: a confirmation without a history, fed to one now
            added = add_known_poison(hdir, self._canonical(chosen), batch_id=self.batch_id, by=by, at=at)
        else:
            notes.append("no history: their copies are not caught on later nights; confirm again with "
                         "--history HDIR (the history later nights are scanned with)")
        if not todo and not added:
            return DecisionResult(CONFIRM, self.dir, skipped=tuple(skipped), notes=tuple(notes))
        fed = [i.ref.to_json() for i in chosen if i.status == CONFIRMED and i.content_sha256 in set(added)]
        history = {"dir": str(hdir), "known_poison_added": len(added), **({"fed": fed} if fed else {})} \
            if hdir is not None else None
        entry = self._entry(CONFIRM, todo, by=by, why=why, selector=selector,
                            override=any(i.status == RELEASED for i in todo), history=history, at=at,
                            request=request)
        written = append_entry(self.dir / AUDIT_FILE, entry)
        if hdir is not None:
            append_entry(hdir / AUDIT_FILE, {**written, "dir": str(self.dir.resolve())})
        log.info("review: %d record(s) of %s confirmed as poison by %s (history %s: +%d)", len(todo), self.dir, by,
                 hdir, len(added))
        return DecisionResult(CONFIRM, self.dir, tuple(i.ref for i in todo), tuple(skipped), history_dir=hdir,
                              history_changed=tuple(added), notes=tuple(notes), entry=written)

    def _refuse_conflicts(self, chosen: Items, status: str, what: str, override: bool, hint: str) -> None:
        conflicts = [i for i in chosen if i.status == status]
        if conflicts and not override:
            names = ", ".join(f"{i.id} ({i.decisions[-1].describe()})" for i in conflicts[:3])
            more = f" and {len(conflicts) - 3} more" if len(conflicts) > 3 else ""
            raise ReviewError(f"{self.dir}: {len(conflicts)} selected record(s) were {what}: {names}{more}; "
                              f"nothing was done; pass --override {hint}")

    def _entry(self, action: str, items: Items, *, by: str, why: str, selector: Selector, override: bool,
               released_file: dict[str, Any] | None = None, history: dict[str, Any] | None = None,
               at: str | None = None, request: str | None = None) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "action": action, "by": by, "why": why, "batch_id": self.batch_id, "verdict": self.verdict,
            "summary_sha256": self.summary_sha256, "selector": selector.to_json(), "override": override,
            "records": [i.ref.to_json() for i in items]}
        if at is not None:
            entry["at"] = at
        if released_file is not None:
            entry["released_file"] = released_file
        if history is not None:
            entry["history"] = history
        if request:
            entry["request"] = request
        return entry

    def decision_of(self, request: str, action: str | None = None) -> dict[str, Any] | None:
        """The newest audit line written for ``request`` (of ``action``, if given), or ``None``: how a retried
        request finds the decision its earlier try made (and committed) before it failed."""
        found: dict[str, Any] | None = None
        for entry in self.audit.entries:
            if entry.get("request") == request and (action is None or entry["action"] == action):
                found = entry
        return found

    def _published_contents(self) -> dict[str, str]:
        """``content_sha256`` -> the released file that published it, over every release of the night."""
        out: dict[str, str] = {}
        for entry in self.audit.entries:
            released = entry.get("released_file")
            if entry["action"] == RELEASE and isinstance(released, dict):
                for raw in entry.get("records") or ():
                    ref = RecordRef.from_json(raw)
                    if ref is not None:
                        out.setdefault(ref.content_sha256, str(released.get("path")))
        return out

    def _canonical(self, items: Items) -> Any:
        import pyarrow as pa
        import pyarrow.parquet as pq

        from tunegate.core.schema import CANONICAL_COLUMNS, canonical_schema

        table = pq.read_table(self._quarantine, columns=list(CANONICAL_COLUMNS))
        return table.take(pa.array([i.row for i in items], pa.int64())).cast(canonical_schema())

    def _write_released(self, items: Items) -> tuple[Path, str, int]:
        import pyarrow.parquet as pq

        from tunegate.core.io import atomic_write

        seq = 1 + max((int(str(e["released_file"]["path"]).split("/")[-1].split("-")[0])
                       for e in self.audit.entries if e["action"] == RELEASE and _names_file(e)), default=0)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        path = self.dir / RELEASED_DIR / f"{seq:04d}-{stamp}.parquet"
        with atomic_write(path) as tmp:
            pq.write_table(self._canonical(items), tmp, compression="zstd")
        data = path.read_bytes()
        return path, hashlib.sha256(data).hexdigest(), len(data)

    def _remove_unrecorded_releases(self) -> None:
        """Remove released files no audit line names (a release killed before its line was written: never
        published) and the temporary files of killed writes. Call it under the lock."""
        folder = self.dir / RELEASED_DIR
        if not folder.is_dir():
            return
        named = {str(e["released_file"]["path"]) for e in self.audit.entries if e["action"] == RELEASE
                 and _names_file(e)}
        for path in sorted(folder.iterdir()):
            rel = path.relative_to(self.dir).as_posix()
            if path.is_file() and rel not in named and (path.suffix == ".parquet" or path.name.endswith(".tmp")):
                log.warning("review: removing %s: no audit line names it (a release killed before it was recorded; "
                            "it was never published)", path)
                path.unlink(missing_ok=True)


def _names_file(entry: dict[str, Any]) -> bool:
    released = entry.get("released_file")
    path = released.get("path") if isinstance(released, dict) else None
    return isinstance(path, str) and path.split("/")[-1].split("-")[0].isdigit()


def _require_person(by: str, why: str) -> None:
    if not by or not by.strip() or not why or not why.strip():
        raise ReviewError("a decision needs who (--by) and why (--why), both non-empty: the audit log keeps them")


@contextmanager
def review_lock(out_dir: str | Path, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
    """The run directory's lock (the one a scan of it holds), waited for up to ``timeout`` seconds."""
    from tunegate.core.io import owned_lock

    out = Path(out_dir)
    if not out.is_dir():
        raise TunegateError(f"{out}: no such directory (has the batch run?)")

    def busy(holder: str) -> ReviewError:
        return ReviewError(f"{out} is in use by another tunegate process ({holder}); waited {timeout:.0f} s; "
                           "retry when it has finished")

    with owned_lock(out / LOCK_FILE, timeout=timeout, busy=busy):
        yield


def released_files(out_dir: str | Path) -> list[dict[str, Any]]:
    """The released files of a night, in order, as the audit log records them (path, sha256, bytes, records,
    who, when), each checked against its recorded sha256: what the fine-tuning side takes besides
    ``accepted.parquet``. A file that is gone or changed is a :class:`ReviewError`."""
    out = Path(out_dir)
    files = []
    for entry in read_log(out / AUDIT_FILE).entries:
        if entry["action"] != RELEASE or not _names_file(entry):
            continue
        info = entry["released_file"]
        path = out / str(info["path"])
        try:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
        except FileNotFoundError:
            raise ReviewError(f"{path}: released by {entry.get('by')} at {entry.get('at')} but gone") from None
        if digest != info.get("sha256"):
            raise ReviewError(f"{path}: not the file the audit log recorded (sha256 differs)")
        files.append({**info, "path": str(path), "by": entry.get("by"), "at": entry.get("at"),
                      "batch_id": entry.get("batch_id")})
    return files
