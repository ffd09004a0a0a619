"""Review of a quarantined night, with an append-only audit trail: list, show, release, confirm as poison.

    review = Review.open("out/2026-01-02")
    review.list(Selector(reason="trigger_phrase"))
    result = review.release(Selector(ids=("r17",)), by="alice", why="a real review, not a trigger")
    result.released_file   # out/2026-01-02/released/0001-<time>.parquet: what the fine-tuning side gets

No Airflow here: the CLI (``tunegate review``) and an operator are thin shells over :class:`Review`. Modules:
:mod:`.audit` (the append-only log), :mod:`.records` (items, selectors, decisions), :mod:`.review` (the
decisions). docs/review.md walks an on-call engineer through a quarantined night.
"""

from __future__ import annotations

from tunegate.core.review.audit import AUDIT_FILE, AuditLog, append_entry, read_log
from tunegate.core.review.records import (
    CONFIRMED,
    PENDING,
    RELEASED,
    STATUSES,
    Decision,
    Item,
    RecordRef,
    Selector,
)
from tunegate.core.review.review import RELEASED_DIR, DecisionResult, Review, released_files, review_lock

__all__ = [
    "AUDIT_FILE",
    "CONFIRMED",
    "PENDING",
    "RELEASED",
    "RELEASED_DIR",
    "STATUSES",
    "AuditLog",
    "Decision",
    "DecisionResult",
    "Item",
    "RecordRef",
    "Review",
    "Selector",
    "append_entry",
    "read_log",
    "released_files",
    "review_lock",
]
