"""report.html: one self-contained page (no external assets, no JavaScript), deterministic for a batch.

The page is the jinja2 template ``templates/report.html.j2`` with autoescaping on: record text, reasons and
messages are escaped there. This module only prepares the values (shares, chart geometry, clipped text).
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

_COLORS = {"pass": "#1a7f37", "quarantine": "#b35900", "halt": "#cf222e"}
_COUNT_KEYS = ("total", "accepted", "quarantined", "rejected")
_CHART_BARS = 15
_BAR_H = 22


def _chart(counts: dict[str, int], total: int) -> dict[str, Any] | None:
    """Horizontal bars (inline SVG) of records per reason: geometry only, the template draws them."""
    if not counts:
        return None
    items = list(counts.items())[:_CHART_BARS]
    peak = max(v for _, v in items)
    label_w = min(12 + 7 * max(len(r) for r, _ in items), 520)  # ~7 px per character at 12 px
    width = label_w + 480
    bars = [{"reason": reason, "n": n, "y": 5 + i * _BAR_H, "w": max(2, int((width - label_w - 110) * n / peak)),
             "share": f" ({n / total:.1%})" if total else ""}
            for i, (reason, n) in enumerate(items)]
    return {"width": width, "height": _BAR_H * len(items) + 10, "label_w": label_w, "bar_h": _BAR_H, "bars": bars}


def _clip(text: Any, n: int = 400) -> str:
    s = "" if text is None else str(text)
    return s if len(s) <= n else s[:n] + " …"


def _sample_row(r: dict[str, Any]) -> dict[str, Any]:
    ev = r["evidence"][0] if r["evidence"] else {}
    detail = ev.get("detail", "")
    with contextlib.suppress(TypeError, ValueError):
        detail = json.dumps(json.loads(detail), ensure_ascii=False)
    return {"id": _clip(r["id"], 60), "where": f"{_clip(r['source_file'], 80)}:{r['source_line']}",
            "instruction": _clip(r["instruction"]), "input": _clip(r["input"]), "output": _clip(r["output"]),
            "score": ev.get("score", ""), "detail": _clip(detail, 300)}


def render_report(summary: dict[str, Any], samples: dict[str, list[dict[str, Any]]],
                  rejected: list[dict[str, Any]]) -> str:
    from tunegate.core.templates import render

    verdict = summary["verdict"]
    total = summary["total"]
    status: dict[str, dict[str, str]] = summary.get("check_status") or {name: {"status": "ok"}
                                                                          for name in summary["checks"]}
    checks = []
    for name, st in status.items():
        result = summary["checks"].get(name)  # None: turned off, listed so the reader sees what did not run
        checks.append({"name": name, "status": st["status"], "reason": st.get("reason"), "result": result,
                       "artifacts": list((result or {}).get("artifacts", {}).items())})
    return render(
        "report.html.j2",
        verdict=verdict,
        color=_COLORS.get(verdict, "#57606a"),
        cards=[{"key": key, "value": summary[key],
                "share": f"{summary[key] / total:.1%}" if total and key != "total" else ""} for key in _COUNT_KEYS],
        conservation_ok=summary["conservation_ok"],
        halt_reasons=summary["halt_reasons"],
        alerts=summary.get("alerts", []),
        chart=_chart(summary["reasons"], total),
        reported_only=list((summary.get("reported_only") or {}).items()),
        checks=checks,
        samples=[(reason, [_sample_row(r) for r in recs]) for reason, recs in samples.items()],
        rejected=[{"where": f"{_clip(r['source_file'], 80)}:{r['source_line']}", "error": _clip(r["error"]),
                   "raw": _clip(r["raw"], 300)} for r in rejected],
        rejected_total=summary["rejected"],
        inputs=[{"path": _clip(i["path"], 200), "records": i["records"], "rejected": i["rejected"],
                 "sha256": i["sha256"]} for i in summary["inputs"]],
        policy=json.dumps(summary["policy"], indent=2, sort_keys=True),
        version=summary["tunegate_version"],
    )
