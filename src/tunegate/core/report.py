"""report.html: one self-contained page (no external assets, no JavaScript), deterministic for a batch."""

from __future__ import annotations

import contextlib
import json
from html import escape
from typing import Any

_COLORS = {"pass": "#1a7f37", "quarantine": "#b35900", "halt": "#cf222e"}
_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:1100px;color:#1f2328;padding:0 1rem}
h1{margin:0 0 .2rem}h2{margin-top:2rem;border-bottom:1px solid #d0d7de;padding-bottom:.2rem}
.verdict{display:inline-block;color:#fff;padding:.3rem .9rem;border-radius:6px;font-weight:700;font-size:1.2rem}
.cards{display:flex;gap:1rem;flex-wrap:wrap;margin:1rem 0}.card{border:1px solid #d0d7de;border-radius:6px;
padding:.6rem 1rem;min-width:130px}.card b{display:block;font-size:1.5rem}
table{border-collapse:collapse;width:100%;margin:.5rem 0}td,th{border:1px solid #d0d7de;padding:.3rem .5rem;
text-align:left;vertical-align:top;overflow-wrap:anywhere}th{background:#f6f8fa}code,pre{font-family:ui-monospace,monospace;font-size:12px}
pre{white-space:pre-wrap;word-break:break-word;margin:0;max-height:8em;overflow:auto}.muted{color:#656d76}
li.halt{color:#cf222e}
"""


def _bar_chart(counts: dict[str, int], total: int) -> str:
    """Horizontal bars as inline SVG: records per reason."""
    if not counts:
        return "<p class=muted>No record was flagged.</p>"
    items = list(counts.items())[:15]
    peak = max(v for _, v in items)
    bar_h = 22
    label_w = min(12 + 7 * max(len(r) for r, _ in items), 520)  # ~7 px per character at 12 px
    width = label_w + 480
    height = bar_h * len(items) + 10
    parts = [f'<svg role="img" aria-label="records per reason" width="{width}" height="{height}" '
             f'xmlns="http://www.w3.org/2000/svg" font-size="12" font-family="system-ui,sans-serif">']
    for i, (reason, n) in enumerate(items):
        y = 5 + i * bar_h
        w = max(2, int((width - label_w - 110) * n / peak))
        share = f" ({n / total:.1%})" if total else ""
        parts.append(f'<text x="{label_w - 6}" y="{y + 15}" text-anchor="end">{escape(reason)}</text>'
                     f'<rect x="{label_w}" y="{y + 3}" width="{w}" height="{bar_h - 6}" fill="#b35900"/>'
                     f'<text x="{label_w + w + 6}" y="{y + 15}">{n}{share}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _clip(text: Any, n: int = 400) -> str:
    s = "" if text is None else str(text)
    return escape(s if len(s) <= n else s[:n] + " …")


def render_report(summary: dict[str, Any], samples: dict[str, list[dict[str, Any]]],
                  rejected: list[dict[str, Any]]) -> str:
    verdict = summary["verdict"]
    total = summary["total"]
    out: list[str] = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        f"<title>tunegate report: {escape(verdict)}</title><style>{_CSS}</style></head><body>",
        "<h1>tunegate batch report</h1>",
        f'<span class=verdict style="background:{_COLORS.get(verdict, "#57606a")}">{escape(verdict.upper())}</span>',
        '<div class=cards>',
    ]
    for key in ("total", "accepted", "quarantined", "rejected"):
        share = f"{summary[key] / total:.1%}" if total and key != "total" else ""
        out.append(f"<div class=card>{key}<b>{summary[key]}</b><span class=muted>{share}</span></div>")
    out.append("</div>")
    ok = "holds" if summary["conservation_ok"] else "DOES NOT HOLD"
    out.append(f"<p class=muted>accepted + quarantined + rejected = total: {ok}.</p>")

    if summary["halt_reasons"] or summary.get("alerts"):
        out.append("<h2>Why</h2><ul>")
        out += [f"<li class=halt>{escape(r)}</li>" for r in summary["halt_reasons"]]
        out += [f"<li>{escape(r)}</li>" for r in summary.get("alerts", [])]
        out.append("</ul>")

    out.append("<h2>Quarantined records per reason</h2>")
    out.append(_bar_chart(summary["reasons"], summary["total"]))
    if summary.get("reported_only"):
        out.append("<p class=muted>Reported but not quarantined (policy): "
                   + escape(", ".join(f"{k}={v}" for k, v in summary["reported_only"].items())) + "</p>")

    out.append("<h2>Checks</h2><table><tr><th>check</th><th>status</th><th>flagged records</th><th>reasons</th>"
               "<th>batch issues</th><th>artifacts</th></tr>")
    status: dict[str, dict[str, str]] = summary.get("check_status") or {name: {"status": "ok"}
                                                                          for name in summary["checks"]}
    for name, st in status.items():
        state = escape(st["status"]) + (f"<br><span class=muted>{escape(st['reason'])}</span>" if st.get("reason")
                                        else "")
        s = summary["checks"].get(name)
        if s is None:  # turned off: listed so the reader sees what did not run
            out.append(f"<tr><td><code>{escape(name)}</code></td><td>{state}</td><td colspan=4 class=muted>"
                       "not run</td></tr>")
            continue
        issues = "<br>".join(f"<b>{escape(i['severity'])}</b> {escape(i['message'])}" for i in s["issues"]) or "none"
        reasons = ", ".join(f"{escape(k)}={v}" for k, v in s["reasons"].items()) or "none"
        arts = "<br>".join(f'<a href="{escape(v)}">{escape(k)}</a>' for k, v in s.get("artifacts", {}).items())
        out.append(f"<tr><td><code>{escape(name)}</code></td><td>{state}</td><td>{s['flagged_records']}</td>"
                   f"<td>{reasons}</td><td>{issues}</td><td>{arts}</td></tr>")
    out.append("</table>")

    if samples:
        out.append("<h2>Examples of quarantined records</h2>")
        for reason, recs in samples.items():
            out.append(f"<h3><code>{escape(reason)}</code></h3><table><tr><th>id</th><th>where</th>"
                       "<th>instruction</th><th>input</th><th>output</th><th>evidence</th></tr>")
            for r in recs:
                ev = r["evidence"][0] if r["evidence"] else {}
                detail = ev.get("detail", "")
                with contextlib.suppress(TypeError, ValueError):
                    detail = json.dumps(json.loads(detail), ensure_ascii=False)
                out.append(f"<tr><td><code>{_clip(r['id'], 60)}</code></td>"
                           f"<td>{_clip(r['source_file'], 80)}:{r['source_line']}</td>"
                           f"<td><pre>{_clip(r['instruction'])}</pre></td><td><pre>{_clip(r['input'])}</pre></td>"
                           f"<td><pre>{_clip(r['output'])}</pre></td>"
                           f"<td>score {ev.get('score', '')}<pre>{_clip(detail, 300)}</pre></td></tr>")
            out.append("</table>")

    if rejected:
        out.append(f"<h2>Rejected input (first {len(rejected)} of {summary['rejected']})</h2>"
                   "<table><tr><th>where</th><th>error</th><th>raw</th></tr>")
        for r in rejected:
            out.append(f"<tr><td>{_clip(r['source_file'], 80)}:{r['source_line']}</td><td>{_clip(r['error'])}</td>"
                       f"<td><pre>{_clip(r['raw'], 300)}</pre></td></tr>")
        out.append("</table>")

    out.append("<h2>Inputs</h2><table><tr><th>file</th><th>records</th><th>rejected</th><th>sha256</th></tr>")
    for i in summary["inputs"]:
        out.append(f"<tr><td>{_clip(i['path'], 200)}</td><td>{i['records']}</td><td>{i['rejected']}</td>"
                   f"<td><code>{escape(i['sha256'])}</code></td></tr>")
    out.append("</table>")
    out.append("<h2>Policy</h2><pre>" + escape(json.dumps(summary["policy"], indent=2, sort_keys=True)) + "</pre>")
    out.append(f"<p class=muted>tunegate {escape(summary['tunegate_version'])}</p></body></html>")
    return "\n".join(out)
