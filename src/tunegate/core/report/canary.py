"""The report's canary section: what the canary audit probed and how far each phrase moved the canary."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: Phrases drawn in the chart and listed in the table (strongest first).
SHOWN = 15


def canary_view(summary: dict[str, Any], out: Path) -> dict[str, Any] | None:
    """The section's values, from ``canary.json`` of the result set; ``None`` when the audit did not run."""
    from tunegate.core.report import plots

    entry = summary.get("canary")
    if entry is None:
        return None
    # no timings: the page is part of the result set, and a rerun writes the same bytes
    view: dict[str, Any] = {"status": entry.get("status"), "why": entry.get("why"), "phrases": [], "tasks": 0,
                            "svg": None, "max_lift": None, "min_datasets": None}
    rel = (summary.get("outputs") or {}).get("canary")
    if not rel:
        return view
    try:
        result = json.loads((out / rel).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        log.warning("report: %s unreadable: %s", out / rel, exc)
        return view
    settings = result.get("settings") or {}
    phrases = result.get("phrases") or []
    view.update(tasks=len(result.get("tasks") or []), max_lift=settings.get("max_lift"),
                watch=result.get("watch") or [], min_datasets=settings.get("min_datasets"), probed=len(phrases))
    for p in phrases[:SHOWN]:
        top = (p.get("tasks") or [{}])[0]
        view["phrases"].append({
            "phrase": p["phrase"], "sources": ", ".join(p.get("sources") or []),
            "fails": p["phrase"] in (result.get("failing") or []), "watch": p["phrase"] in (result.get("watch") or []),
            "lift": f"{p.get('max_lift', 0.0):.0%}", "task": top.get("task", ""), "label": top.get("label", ""),
            "flip": f"{top['flip_rate']:.0%}" if "flip_rate" in top else "",
            "base": f"{top['base_rate']:.0%}" if "base_rate" in top else "",
            "datasets": ", ".join(p.get("datasets_failing") or []), "tasks_probed": p.get("tasks_probed", 0)})
    if phrases and settings.get("max_lift") is not None:
        view["svg"] = plots.canary_chart(phrases[:SHOWN], threshold=float(settings["max_lift"]))
    return view
