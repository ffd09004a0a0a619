"""A night's outputs as one result set: invalidate, commit, verify; one run per output directory.

``summary.json`` is the commit marker of the set: :func:`begin_outputs` removes it first when a run of the
directory starts (so the previous night's set stops being valid at once), :func:`commit_outputs` writes it
last with the sha256 and size of every other output under ``commit.files``, and :func:`load_committed` is
what every reader calls. :func:`output_lock` keeps one run per output directory.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tunegate.core.ingest import REJECTED_FILE
from tunegate.core.io import owned_lock, write_json_atomic
from tunegate.exceptions import TunegateError

log = logging.getLogger(__name__)

ACCEPTED_FILE = "accepted.parquet"
QUARANTINE_FILE = "quarantine.parquet"
SUMMARY_FILE = "summary.json"
REPORT_FILE = "report.html"
HELD_FILE = "held.parquet"
#: The night's provenance (tunegate.core.provenance): versions, inputs, checks, outputs, batch digest.
MANIFEST_FILE = "manifest.json"
#: Passing records with findings the policy reports without quarantining (only when there are any).
REPORTED_FILE = "reported.parquet"
#: The canary audit's result (tunegate.core.audit): flip rates of the probed phrases.
CANARY_FILE = "canary.json"
DATA_DOCS_DIR = "data_docs"
#: Where a rerun archives the earlier run's summary.json (the earlier verdict is never lost).
RUNS_DIR = "runs"
#: The OS-level lock of an output directory, and the sidecar naming its holder (pid, host) for the message.
LOCK_FILE = ".tunegate.lock"
LOCK_OWNER_FILE = LOCK_FILE + ".owner"  # written by tunegate.core.io.owned_lock



def incomplete_message(out_dir: str | Path, why: str) -> str:
    return f"outputs of {out_dir} are incomplete or from an interrupted run; rerun the night ({why})"


#: Test-only: the name of a :func:`fault_point` at which the process kills itself with SIGKILL.
FAULT_POINT_ENV = "TUNEGATE_FAULT_POINT"


def fault_point(name: str) -> None:
    """Test-only hook: ``kill -9`` this process here when ``$TUNEGATE_FAULT_POINT`` equals ``name``.

    A no-op otherwise (one environment lookup). The fault tests (tests/core/test_faults.py) use it to stop a
    run at a precise stage boundary, the way a killed worker or an OOM kill would. Points: ``ingested``,
    ``checked`` (scan), ``gate_writes`` (gate, quarantine written, passing records not yet placed),
    ``history_updated`` (scan, history updated, set not yet committed), ``shard_written`` (a shard of the sharded
    DAG complete in its temporary folder, not yet renamed into place).
    """
    if os.environ.get(FAULT_POINT_ENV) == name:
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


def remove_stale_temps(directory: Path) -> list[Path]:
    """Remove the temporary siblings (``.NAME.*.tmp``) that :func:`tunegate.core.io.atomic_path` made in
    ``directory`` and a killed process left behind; returns what was removed. Call it only under the
    directory's lock: a live writer's temporary file looks the same."""
    removed = []
    for tmp in directory.glob(".*.tmp") if directory.is_dir() else ():
        if tmp.is_file():
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def begin_outputs(out_dir: str | Path, *, keep: Path | None = None) -> None:
    """Invalidate the directory's previous result set before anything of a new run is written.

    The marker (``summary.json``) goes first, so from that instant no reader accepts the old set; then the
    old outputs themselves (above all ``accepted.parquet``, which a careless consumer might read without
    the marker), the Data Docs, and the temporary files a killed run left. Call it holding the lock.

    The previous ``summary.json`` is not deleted but archived (:func:`archive_summary`), and the review's files
    (``audit.jsonl``, ``released/``) are left alone: a rerun keeps the record of the earlier verdict.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    archive_summary(out)  # moves summary.json away: from here no reader accepts the old set
    (out / SUMMARY_FILE).unlink(missing_ok=True)
    for name in (ACCEPTED_FILE, HELD_FILE, QUARANTINE_FILE, REPORT_FILE, REJECTED_FILE, MANIFEST_FILE, REPORTED_FILE,
                 CANARY_FILE):
        path = out / name
        if keep is None or not path.exists() or path.resolve() != keep.resolve():
            path.unlink(missing_ok=True)
    shutil.rmtree(out / DATA_DOCS_DIR, ignore_errors=True)
    removed = remove_stale_temps(out)
    if removed:
        log.info("gate: removed %d temporary file(s) an interrupted run left in %s", len(removed), out)


def archive_summary(out: Path) -> Path | None:
    """Move the directory's ``summary.json`` (the earlier run's verdict) to ``runs/<UTC time>-summary.json``, and
    note the rerun in the night's audit log when it has one (a reviewed night); returns the archive. Call it
    holding the lock; ``None`` when there is no summary (a first run, or a run killed before its commit)."""
    import hashlib
    from datetime import UTC, datetime

    summary = out / SUMMARY_FILE
    try:
        data = summary.read_bytes()
    except FileNotFoundError:
        return None
    archive = out / RUNS_DIR / f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%S%fZ')}-{SUMMARY_FILE}"
    archive.parent.mkdir(exist_ok=True)
    os.replace(summary, archive)
    from tunegate.core.review.audit import AUDIT_FILE, append_entry

    if (out / AUDIT_FILE).is_file():
        try:
            earlier = json.loads(data)
        except ValueError:
            earlier = {}
        earlier = earlier if isinstance(earlier, dict) else {}
        append_entry(out / AUDIT_FILE, {
            "action": "rerun", "archived": archive.relative_to(out).as_posix(),
            "summary_sha256": hashlib.sha256(data).hexdigest(), "verdict": earlier.get("verdict"),
            "batch_id": (earlier.get("history") or {}).get("batch_id") or out.resolve().name,
            "why": "the night is run again: this replaces its result set; the earlier summary is archived"})
    log.info("gate: the earlier summary of %s is archived as %s", out, archive)
    return archive


def file_sha256(path: Path) -> str:
    """sha256 of a local file's bytes."""
    import hashlib

    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def file_entry(path: Path) -> dict[str, Any]:
    """``{"sha256", "bytes"}`` of a local file, as the commit (and the night's manifest) record it."""
    return {"sha256": file_sha256(path), "bytes": path.stat().st_size}


def commit_outputs(out_dir: str | Path, summary: dict[str, Any]) -> dict[str, Any]:
    """Commit the result set: record each output's sha256 and size in the summary, then write ``summary.json``
    (atomically, last). Until this returns, readers refuse the directory. Returns the summary."""
    out = Path(out_dir)
    files = [rel for key, rel in summary["outputs"].items() if key != "summary"]
    for s in summary.get("checks", {}).values():
        files += list(s.get("artifacts", {}).values())
    summary["commit"] = {"files": {rel: file_entry(out / rel) for rel in sorted(set(files))}}
    write_json_atomic(out / SUMMARY_FILE, summary)
    return summary


def load_committed(out_dir: str | Path, *, verify_hashes: bool = True) -> dict[str, Any]:
    """The summary of a committed result set; raises :class:`TunegateError` (:func:`incomplete_message`) when
    there is none: no ``summary.json``, no ``commit`` section, or an output that is missing or does not match
    its recorded size and sha256. Every reader of a night's outputs goes through this."""
    out = Path(out_dir)
    path = out / SUMMARY_FILE
    if not out.is_dir():
        raise TunegateError(f"{out}: no such directory (has the batch run?)")
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TunegateError(incomplete_message(out, f"no {SUMMARY_FILE}")) from None
    except (OSError, ValueError) as exc:
        raise TunegateError(incomplete_message(out, f"{SUMMARY_FILE} is unreadable: {exc}")) from None
    files = (summary.get("commit") or {}).get("files") if isinstance(summary, dict) else None
    if not isinstance(files, dict) or not files:
        raise TunegateError(incomplete_message(out, f"{SUMMARY_FILE} has no commit record"))
    for rel, entry in sorted(files.items()):
        target = out / rel
        if not target.is_file():
            raise TunegateError(incomplete_message(out, f"{rel} is missing"))
        if target.stat().st_size != entry.get("bytes"):
            raise TunegateError(incomplete_message(out, f"{rel} is not the file the summary committed (size)"))
        if verify_hashes and file_entry(target)["sha256"] != entry.get("sha256"):
            raise TunegateError(incomplete_message(out, f"{rel} is not the file the summary committed (sha256)"))
    return dict(summary)


@contextmanager
def output_lock(out_dir: str | Path) -> Iterator[None]:
    """One run per output directory: an OS-level lock (``filelock``, flock) that dies with its holder.

    Taken without waiting: a second run into the same directory fails at once with a :class:`TunegateError`
    naming the holder (pid and host, from a sidecar file the holder writes), instead of deleting the other
    run's work directory. The lock is not re-entrant across calls; take it once per run.
    """
    out = Path(out_dir)

    def busy(holder: str) -> TunegateError:
        return TunegateError(f"{out} is in use by another tunegate run ({holder}); wait for it to finish, or "
                             "choose another output directory (the lock is released when that process ends)")

    with owned_lock(out / LOCK_FILE, timeout=0, busy=busy):
        yield
