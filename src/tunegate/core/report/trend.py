"""The trend over recent nights: volume, quarantine rate and top reasons, from the history's manifest.

Each batch the history holds carries what the gate did with it (``batches[i]["night"]``: quarantined,
rejected, top reasons; recorded by :func:`tunegate.core.history.update_history` since this report
existed; older entries have accepted counts only). Tonight comes from the summary. Halted nights never
enter the history, so they are absent from the trend (tonight excepted). The history directory is the one
tonight's history checks used (their metrics name it); the manifest is read as JSON, never verified or
locked: a damaged history must not cost the night its report.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: Nights shown, tonight included.
NIGHTS = 14


def history_of(summary: dict[str, Any]) -> tuple[str | None, str | None]:
    """The history directory and batch id tonight's history checks used, from their metrics."""
    for name in ("near_duplicate", "embedding_outlier"):
        metrics = ((summary.get("checks") or {}).get(name) or {}).get("metrics") or {}
        if metrics.get("history_dir"):
            return str(metrics["history_dir"]), metrics.get("batch_id")
    return None, None


def _rate(quarantined: int | None, records: int) -> float | None:
    return quarantined / records if quarantined is not None and records else None


def recent_nights(summary: dict[str, Any], limit: int = NIGHTS) -> tuple[list[dict[str, Any]], str]:
    """Rows (oldest first, tonight last) and a one-line note saying where they come from."""
    from tunegate.core.history import MANIFEST

    history_dir, batch_id = history_of(summary)
    if history_dir is None:
        return [], "no history was given to this run (--history DIR): no trend"
    tonight_name = batch_id or "tonight"
    passed = int(summary.get("accepted", 0)) + int(summary.get("held", 0) or 0)
    quarantined = int(summary.get("quarantined", 0))
    tonight = {"night": tonight_name, "accepted": passed, "quarantined": quarantined,
               "rejected": int(summary.get("rejected", 0)), "rate": _rate(quarantined, passed + quarantined),
               "reasons": dict(list((summary.get("reasons") or {}).items())[:3]), "verdict": summary.get("verdict")}
    path = Path(history_dir) / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {"batches": []}
        # a review's release joins the history as its own batch ``<night>+released-<seq>``: not a night
        batches = [b for b in manifest.get("batches", [])
                   if b.get("batch_id") != batch_id and "+released-" not in str(b.get("batch_id"))]
    except (OSError, ValueError, AttributeError) as exc:
        log.warning("report: history %s unreadable for the trend: %s", history_dir, exc)
        return [tonight], f"the history {history_dir} could not be read ({exc}): tonight only"
    rows = []
    for b in sorted(batches, key=lambda b: str(b.get("batch_id")))[-(limit - 1):]:
        night = b.get("night") or {}
        accepted = int(b.get("records", 0))
        q = night.get("quarantined")
        rows.append({"night": str(b.get("batch_id")), "accepted": accepted, "quarantined": q,
                     "rejected": night.get("rejected"), "rate": _rate(q, accepted + (q or 0)),
                     "reasons": dict(night.get("reasons") or {}), "verdict": None})
    note = (f"{len(rows)} earlier night(s) from the history {history_dir} (nights that halted never enter it)"
            if rows else f"the history {history_dir} holds no earlier night yet")
    return [*rows, tonight], note
