"""The audit log: one JSON object per line, appended, never rewritten; the review state is read from it.

Every decision (``release``, ``confirm``) and every rerun of a reviewed night is one line of ``DIR/audit.jsonl``
(and of ``HISTORY_DIR/audit.jsonl`` when a history is involved). A line is self-contained: who, when (UTC),
what, on which records (id and ``content_sha256``), why, with which tunegate, on which result set (the sha256 of
its ``summary.json``).

Appending: the file is opened with ``O_APPEND``, the line is written with one ``write`` and ``fsync``-ed before
the call returns; the caller holds the run directory's lock, so lines never interleave. A process killed in the
middle of a write leaves a *torn* last line: readers skip a line that is not a whole JSON object, with a
warning naming the file and line, and the next append starts on a fresh line, so one torn write never costs
another line.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

AUDIT_FILE = "audit.jsonl"
#: The format of a line; a reader refuses none, but a future change of meaning bumps it.
AUDIT_FORMAT = 1


def utc_now() -> str:
    """The current time, UTC, ISO 8601 with microseconds and a ``Z``: how every audit line says when."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def tool_version() -> str:
    from tunegate import __version__

    return f"tunegate {__version__}"


def append_entry(path: str | Path, entry: dict[str, Any]) -> dict[str, Any]:
    """Append ``entry`` (plus ``format``, ``at`` and ``tool`` when absent) as one line; returns what was written.

    Call it holding the lock of the directory the log belongs to. The write is one ``os.write`` of the whole
    line on an ``O_APPEND`` descriptor, followed by ``fsync``: when this returns, the line is on disk.
    """
    target = Path(path)
    line = {"format": AUDIT_FORMAT, "at": utc_now(), "tool": tool_version(), **entry}
    data = (json.dumps(line, ensure_ascii=False, sort_keys=True, separators=(",", ":")) + "\n").encode("utf-8")
    target.parent.mkdir(parents=True, exist_ok=True)
    created = not target.exists()
    fd = os.open(target, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)  # read: the last byte
    try:
        if _ends_torn(fd):
            data = b"\n" + data  # a killed writer left half a line: end it, so this line stays whole
        written = 0
        while written < len(data):  # one write in practice; a short write (a full disk) is continued
            written += os.write(fd, data[written:])
        os.fsync(fd)
    finally:
        os.close(fd)
    if created:
        _fsync_dir(target.parent)
    return line


def _ends_torn(fd: int) -> bool:
    size = os.fstat(fd).st_size
    return size > 0 and os.pread(fd, 1, size - 1) != b"\n"


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@dataclass
class AuditLog:
    """The readable lines of an audit log, in order, and a warning for each line that was skipped."""

    path: Path
    entries: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def read_log(path: str | Path) -> AuditLog:
    """Every whole line of the log (a missing log is an empty one). A line that is not a JSON object with an
    ``action`` (a write cut short by a kill, a stray edit) is skipped with a warning naming its line."""
    target = Path(path)
    log_ = AuditLog(target)
    try:
        raw = target.read_bytes()
    except FileNotFoundError:
        return log_
    lines = raw.split(b"\n")
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            entry = json.loads(text.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            entry = None
        if not isinstance(entry, dict) or not isinstance(entry.get("action"), str):
            last = number == len(lines)  # no newline after it: the write never finished
            why = "cut short (a write killed half-way)" if last else "not a whole audit entry"
            message = f"{target}:{number}: {why}; skipped"
            log.warning("review: %s", message)
            log_.warnings.append(message)
            continue
        entry["line"] = number
        log_.entries.append(entry)
    return log_
