"""The report's charts: Vega-Lite specs built with altair, rendered to inline SVG by vl-convert.

The SVG is written into the page (no JavaScript, nothing fetched), and the same data gives the same bytes.
Vega escapes every label it draws (task names and reasons come from the data). altair and vl-convert are
imported inside the functions: importing tunegate stays fast, and only a report pays for them.
"""

from __future__ import annotations

import logging
from typing import Any

from markupsafe import Markup

log = logging.getLogger(__name__)

_FONT = "system-ui, sans-serif"
_ORANGE, _RED, _GREEN, _GREY = "#b35900", "#cf222e", "#1a7f37", "#8c959f"
_WIDTH = 560
_LABEL_LIMIT = 320  # pixels of a bar label before vega cuts it with an ellipsis


def _render(chart: Any) -> Markup | None:
    try:
        import vl_convert
    except ImportError:  # a report without charts is still a report
        log.warning("report: vl-convert-python is not installed; the page has no charts")
        return None
    spec = chart.configure(font=_FONT).configure_view(stroke=None).to_dict()
    svg = vl_convert.vegalite_to_svg(spec)
    return Markup(svg)  # vega's own SVG: it escapes the labels it draws


def _data(values: list[dict[str, Any]]) -> Any:
    import altair as alt

    return alt.Data(values=values)  # type: ignore[no-untyped-call]


def reasons_chart(counts: dict[str, int], total: int, limit: int = 15) -> Markup | None:
    """Records per reason, largest first (horizontal bars with the count and share)."""
    import altair as alt

    items = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]
    if not items:
        return None
    values = [{"reason": r, "records": n, "label": f"{n} ({n / total:.1%})" if total else str(n)} for r, n in items]
    base = alt.Chart(_data(values)).encode(
        y=alt.Y("reason:N", sort=None, title=None, axis=alt.Axis(labelLimit=_LABEL_LIMIT)),
        x=alt.X("records:Q", title="quarantined records"))
    bars = base.mark_bar(color=_ORANGE)
    text = base.mark_text(align="left", dx=4).encode(text="label:N")
    return _render((bars + text).properties(width=_WIDTH - 160, height=22 * len(items),
                                            padding={"left": 5, "top": 5, "right": 90, "bottom": 5}))


def histogram_chart(histogram: dict[str, Any], *, threshold: float, x_title: str, rule_label: str
                    ) -> Markup | None:
    """A score histogram (``edges``, ``counts`` from a check's metrics) with the threshold drawn as a rule."""
    import altair as alt

    edges, counts = histogram.get("edges") or [], histogram.get("counts") or []
    if len(edges) != len(counts) + 1 or not any(counts):
        return None
    values = [{"lo": edges[i], "hi": edges[i + 1], "records": c, "side": "above" if edges[i] >= threshold else "below"}
              for i, c in enumerate(counts)]
    scale = alt.Scale(domain=[edges[0], edges[-1]], nice=False)
    bars = alt.Chart(_data(values)).mark_bar(binSpacing=0).encode(
        x=alt.X("lo:Q", scale=scale, title=x_title), x2="hi:Q",
        y=alt.Y("records:Q", title="records (square-root scale)", scale=alt.Scale(type="sqrt")),
        color=alt.Color("side:N", scale=alt.Scale(domain=["below", "above"], range=[_GREY, _ORANGE]), legend=None))
    rule_data = _data([{"t": threshold, "label": rule_label}])
    rule = alt.Chart(rule_data).mark_rule(color=_RED, strokeWidth=2).encode(x=alt.X("t:Q", scale=scale))
    label = alt.Chart(rule_data).mark_text(color=_RED, align="left", dx=4, dy=-4, baseline="top").encode(
        x=alt.X("t:Q", scale=scale), y=alt.value(0), text="label:N")
    return _render((bars + rule + label).properties(width=_WIDTH - 100, height=140,
                                                    padding={"left": 5, "top": 5, "right": 90, "bottom": 5}))


def canary_chart(phrases: list[dict[str, Any]], *, threshold: float) -> Markup | None:
    """Per probed phrase, the largest share of one task's held-out records it moved to one label (lift), the
    failing ones in red, the policy's ``max_lift`` as a rule."""
    import altair as alt

    if not phrases:
        return None
    values = [{"phrase": p["phrase"], "lift": max(0.0, float(p.get("max_lift", 0.0))),
               "kind": "fails" if p.get("fails") else "passes", "label": f"{float(p.get('max_lift', 0.0)):.0%}"}
              for p in phrases]
    scale = alt.Scale(domain=[0, 1])
    base = alt.Chart(_data(values)).encode(
        y=alt.Y("phrase:N", sort=None, title=None, axis=alt.Axis(labelLimit=_LABEL_LIMIT)),
        x=alt.X("lift:Q", scale=scale, title="held-out records moved to one label (flip rate - base rate)",
                axis=alt.Axis(format="%")))
    bars = base.mark_bar().encode(color=alt.Color("kind:N", scale=alt.Scale(domain=["passes", "fails"],
                                                                            range=[_GREY, _RED]), legend=None))
    text = base.mark_text(align="left", dx=4).encode(text="label:N")
    rule = alt.Chart(_data([{"t": threshold}])).mark_rule(color=_RED, strokeDash=[4, 3]).encode(
        x=alt.X("t:Q", scale=scale))
    return _render((bars + text + rule).properties(width=_WIDTH - 200, height=20 * len(values),
                                                   padding={"left": 5, "top": 5, "right": 60, "bottom": 5}))


def trend_chart(nights: list[dict[str, Any]]) -> Markup | None:
    """Volume per night (accepted, quarantined, rejected stacked) over the quarantine rate."""
    import altair as alt

    if not nights:
        return None
    order = [n["night"] for n in nights]
    parts = [{"night": n["night"], "outcome": key, "records": n[key]} for n in nights
             for key in ("accepted", "quarantined", "rejected") if n.get(key) is not None]
    x = alt.X("night:N", sort=order, title=None, axis=alt.Axis(labelAngle=-30, labelLimit=140))
    volume = alt.Chart(_data(parts)).mark_bar().encode(
        x=x, y=alt.Y("records:Q", title="records", stack=True),
        color=alt.Color("outcome:N", scale=alt.Scale(domain=["accepted", "quarantined", "rejected"],
                                                     range=[_GREEN, _ORANGE, _RED]),
                        legend=alt.Legend(orient="top", title=None)),
        order=alt.Order("outcome:N")).properties(width=_WIDTH - 100, height=130)
    rates = [{"night": n["night"], "rate": n["rate"]} for n in nights if n.get("rate") is not None]
    rate = alt.Chart(_data(rates)).mark_line(point=True, color=_ORANGE).encode(
        x=x, y=alt.Y("rate:Q", title="quarantined share", axis=alt.Axis(format="%"))).properties(
        width=_WIDTH - 100, height=90)
    return _render(alt.vconcat(volume, rate) if rates else volume)
