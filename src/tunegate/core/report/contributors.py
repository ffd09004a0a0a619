"""The report's "Contributors: ledger and source diversity" section: tonight against the contributor ledger (the
movers, new and flooding contributors, campaign attributions) and the per-task concentration of contributors.

Reads only the summary: ``summary["ledger"]`` (:func:`tunegate.core.ledger.contributor_summary`) and the metrics of
the ``contributor_policy`` and ``source_diversity`` checks. Two charts: each of tonight's contributors' trust with
its 95% credible interval (before tonight, and after), and the top contributor's share of the least diverse tasks
against the policy's threshold.
"""

from __future__ import annotations

from typing import Any

from markupsafe import Markup

from tunegate.core.report.evidence import clip

#: Rows of the per-task table and bars of its chart.
TASK_ROWS = 15


def _metrics(summary: dict[str, Any], check: str) -> dict[str, Any]:
    metrics: dict[str, Any] = ((summary.get("checks") or {}).get(check) or {}).get("metrics") or {}
    return metrics


def _trust_text(t: dict[str, Any] | None) -> str:
    return f"{t['score']:.3f} [{t['low']:.3f}, {t['high']:.3f}]" if t else ""


def _row(r: dict[str, Any]) -> dict[str, Any]:
    change = r.get("change")
    return {"name": clip(r["name"], 80), "records": r["records"], "quarantined": r["quarantined"],
            "flagged": r["flagged"], "before": _trust_text(r.get("trust_before")), "after": _trust_text(r["trust"]),
            "change": f"{change:+.3f}" if change is not None else "", "over_cap": r.get("over_cap", 0),
            "first_seen": r.get("first_seen", ""), "confirmed": r.get("confirmed_poison", 0)}


def contributors_view(summary: dict[str, Any]) -> dict[str, Any]:
    """The section's values for ``report_contributors.html.j2``."""
    ledger = summary.get("ledger") or {}
    policy = _metrics(summary, "contributor_policy")
    diversity = _metrics(summary, "source_diversity")
    notes = [str(n) for n in (ledger.get("note"), ledger.get("error"), policy.get("status_reason")) if n]
    tasks = list(diversity.get("task_table") or [])[:TASK_ROWS]
    return {
        "named": bool(ledger.get("contributors")),
        "notes": notes,
        "nights": ledger.get("ledger_nights", 0),
        "movers": [_row(r) for r in ledger.get("movers") or []],
        "new": [_row(r) for r in ledger.get("new") or []],
        "new_count": ledger.get("new_count", 0),
        "flooding": [clip(n, 80) for n in ledger.get("flooding") or []],
        "campaigns": [{**a, "contributor": clip(a["contributor"], 80), "campaign": clip(a["campaign"], 80)}
                      for a in policy.get("campaigns") or []],
        "blocked": list((policy.get("blocked") or {}).items()),
        "trust_svg": trust_chart(ledger.get("tonight") or []),
        "diversity_note": diversity.get("status_reason", "source_diversity did not run"),
        "effective": diversity.get("effective_contributors"),
        "dominated": diversity.get("dominated") or [],
        "tasks": [{**t, "task": clip(t["task"], 80), "top_contributor": clip(t.get("top_contributor") or "", 60),
                   "top_source": clip(t.get("top_source") or "", 60),
                   "share": f"{t['top_contributor_share']:.0%}" if t.get("top_contributor_share") is not None else "",
                   "source_share": f"{t['top_source_share']:.0%}" if t.get("top_source_share") is not None else ""}
                  for t in tasks],
        "diversity_svg": share_chart(tasks, diversity.get("max_top_contributor_share")),
    }


def trust_chart(rows: list[dict[str, Any]]) -> Markup | None:
    """Tonight's contributors: trust after tonight (dot) with its 95% credible interval (bar), and before (grey)."""
    import altair as alt

    from tunegate.core.report.plots import _data, _render

    values = []
    for r in rows:
        for when, t in (("before tonight", r.get("trust_before")), ("after tonight", r.get("trust"))):
            if t:
                values.append({"contributor": r["name"][:60], "when": when, "score": t["score"], "low": t["low"],
                               "high": t["high"]})
    if not values:
        return None
    order = [r["name"][:60] for r in rows]
    y = alt.Y("contributor:N", sort=order, title=None)
    yoffset = alt.YOffset("when:N", sort=["before tonight", "after tonight"])
    color = alt.Color("when:N", scale=alt.Scale(domain=["before tonight", "after tonight"],
                                                range=["#8c959f", "#b35900"]),
                      legend=alt.Legend(orient="top", title=None))
    scale = alt.Scale(domain=[0, 1])
    base = alt.Chart(_data(values)).encode(y=y, yOffset=yoffset, color=color)
    bars = base.mark_rule(strokeWidth=2).encode(x=alt.X("low:Q", scale=scale, title="trust (1 - flag rate), 95% "
                                                                                     "credible interval"), x2="high:Q")
    dots = base.mark_point(filled=True, size=50).encode(x=alt.X("score:Q", scale=scale))
    return _render((bars + dots).properties(width=420, height=max(60, 26 * len(rows))))


def share_chart(tasks: list[dict[str, Any]], threshold: float | None) -> Markup | None:
    """The top contributor's share of the least diverse tasks, with the policy's threshold as a rule."""
    import altair as alt

    from tunegate.core.report.plots import _data, _render

    values = [{"task": t["task"][:60], "share": t["top_contributor_share"], "contributor": t["top_contributor"]}
              for t in tasks if t.get("top_contributor_share") is not None]
    if not values:
        return None
    scale = alt.Scale(domain=[0, 1])
    bars = alt.Chart(_data(values)).mark_bar(color="#b35900").encode(
        y=alt.Y("task:N", sort=None, title=None), x=alt.X("share:Q", scale=scale, title="top contributor's share",
                                                          axis=alt.Axis(format="%")))
    chart = bars
    if threshold is not None:
        rule = alt.Chart(_data([{"t": threshold}])).mark_rule(color="#cf222e", strokeWidth=2).encode(
            x=alt.X("t:Q", scale=scale))
        chart = bars + rule
    return _render(chart.properties(width=420, height=22 * len(values)))
