"""report.html assembled: the values each section of the template shows, from the summary and the outputs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tunegate.core.report.contributors import contributors_view
from tunegate.core.report.evidence import clip, evidence_items, highlight, number
from tunegate.core.report.issues import next_steps, ranked_issues
from tunegate.core.report.phrases import suspicious_phrases
from tunegate.core.report.reading import (
    NONE,
    Breakdown,
    QuarantineDigest,
    count_records,
    digest_quarantine,
    read_rows,
)

COLORS = {"pass": "#1a7f37", "quarantine": "#b35900", "halt": "#cf222e"}
_COUNT_KEYS = ("total", "accepted", "held", "quarantined", "rejected")
#: Near-duplicate clusters shown (largest first), and rows of each breakdown table.
CLUSTERS = 10
BREAKDOWN_ROWS = 15


def render_report(summary: dict[str, Any], out_dir: str | Path, rejected: list[dict[str, Any]]) -> str:
    """The page for a gated night. ``out_dir`` holds the night's quarantine and accepted (or held) records,
    already written; ``rejected`` is the first few rejected-input entries."""
    from tunegate.core.report import plots
    from tunegate.core.report.canary import canary_view
    from tunegate.core.report.trend import recent_nights
    from tunegate.core.templates import render

    out = Path(out_dir)
    outputs = summary.get("outputs") or {}
    quarantine = out / str(outputs.get("quarantine", "quarantine.parquet"))
    passed = out / str(outputs.get("accepted") or outputs.get("held") or "accepted.parquet")
    phrases = suspicious_phrases(summary)
    digest = digest_quarantine(quarantine, phrases=[p["phrase"] for p in phrases])
    clusters = sorted(digest.clusters.values(), key=lambda c: (-c.size, c.representative))[:CLUSTERS]
    rep_rows = count_records(passed, (digest.tasks, digest.contributors), find_ids=[c.representative for c in clusters])
    samples = digest.ranked_samples()
    wanted = {-neg for heap in samples.values() for _, neg, _ in heap}
    wanted |= {r for p in phrases for r in digest.ranked_phrase_rows(p["phrase"])}
    wanted |= {-neg for c in clusters for _, neg, _ in c.copies}
    texts = read_rows(quarantine, wanted)
    rep_texts = read_rows(passed, rep_rows.values())
    issues = ranked_issues(summary)
    nights, trend_note = recent_nights(summary)
    verdict = summary["verdict"]
    total = summary["total"]
    return render(
        "report.html.j2",
        verdict=verdict,
        color=COLORS.get(verdict, "#57606a"),
        cards=_cards(summary),
        conservation_ok=summary["conservation_ok"],
        next_steps=next_steps(summary, issues, phrases),
        issues=[i for i in issues if i.severity != "info" or i.halted],
        notes=[i for i in issues if i.severity == "info" and not i.halted],
        phrases=[_phrase_view(p, digest, texts) for p in phrases],
        canary=canary_view(summary, out),
        reasons_svg=plots.reasons_chart(summary["reasons"], total),
        reported_only=list((summary.get("reported_only") or {}).items()),
        samples=[(reason, [_sample_view(texts[-neg], finding) for _, neg, finding in samples[reason]
                           if -neg in texts]) for reason in summary["reasons"] if reason in samples],
        clusters=[_cluster_view(c, texts, rep_texts.get(rep_rows.get(c.representative, -1))) for c in clusters],
        cluster_total=len(digest.clusters),
        history_copies=digest.history_copies.most_common(10),
        distributions=_distributions(summary),
        tasks=_breakdown(digest.tasks),
        contributors=_breakdown(digest.contributors) if set(digest.contributors.records) - {NONE} else None,
        trend_svg=plots.trend_chart(nights) if len(nights) > 1 else None,
        nights=[{**n, "rate": f"{n['rate']:.1%}" if n["rate"] is not None else "",
                 "reasons": ", ".join(f"{k} {v}" for k, v in n["reasons"].items())} for n in reversed(nights)],
        trend_note=trend_note,
        c=contributors_view(summary),
        checks=_checks(summary),
        rejected=[{"where": f"{clip(r['source_file'], 80)}:{r['source_line']}", "error": clip(r["error"]),
                   "raw": clip(r["raw"], 300)} for r in rejected],
        rejected_total=summary["rejected"],
        inputs=[{"path": clip(i["path"], 200), "records": i["records"], "rejected": i["rejected"],
                 "sha256": i["sha256"]} for i in summary["inputs"]],
        policy=json.dumps(summary["policy"], indent=2, sort_keys=True),
        version=summary["tunegate_version"],
    )


def _cards(summary: dict[str, Any]) -> list[dict[str, Any]]:
    total = summary["total"]
    return [{"key": key, "value": summary[key],
             "share": f"{summary[key] / total:.1%}" if total and key != "total" else ""}
            for key in _COUNT_KEYS if key != "held" or summary.get("held")]


def _where(rec: dict[str, Any]) -> dict[str, str]:
    path = str(rec.get("source_file") or "")
    return {"where": f"{Path(path).name}:{rec.get('source_line')}", "where_full": f"{path}:{rec.get('source_line')}"}


def _record_view(rec: dict[str, Any]) -> dict[str, Any]:
    return {"id": clip(rec.get("id"), 48), "id_full": clip(rec.get("id"), 300), **_where(rec),
            "task": clip(rec.get("task") or rec.get("source") or "", 80), "contributor": rec.get("contributor") or "",
            "instruction": clip(rec.get("instruction"), 240), "input": clip(rec.get("input")),
            "output": clip(rec.get("output"))}


def _sample_view(rec: dict[str, Any], finding: dict[str, Any]) -> dict[str, Any]:
    return {**_record_view(rec), "evidence": evidence_items(finding)}


def _phrase_view(p: dict[str, Any], digest: QuarantineDigest, texts: dict[int, dict[str, Any]]) -> dict[str, Any]:
    examples = []
    for row in digest.ranked_phrase_rows(p["phrase"]):
        rec = texts.get(row)
        if rec is None:
            continue
        examples.append({**_record_view(rec), **{f: highlight(rec.get(f), p["phrase"])
                                                 for f in ("instruction", "input", "output")}})
    contributors = ", ".join(f"{name} ({n})" for name, n in p["contributors"].items()) or "not named"
    return {**p, "examples": examples, "contributors_text": contributors}


def _cluster_view(cluster: Any, texts: dict[int, dict[str, Any]], rep: dict[str, Any] | None) -> dict[str, Any]:
    copies = []
    for similarity, neg, exact in sorted(cluster.copies, reverse=True):
        rec = texts.get(-neg)
        if rec is not None:
            copies.append({**_record_view(rec), "similarity": number(similarity), "exact": exact})
    return {"representative": clip(cluster.representative, 48),
            "representative_full": clip(cluster.representative, 300), "size": cluster.size,
            "rep": _record_view(rep) if rep else None, "copies": copies}


def _distributions(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Score histograms the checks recorded, with their threshold."""
    from tunegate.core.report import plots

    checks = summary.get("checks") or {}
    out = []
    near = (checks.get("near_duplicate") or {}).get("metrics") or {}
    if near.get("similarity_histogram") and near.get("threshold") is not None:
        t = float(near["threshold"])
        out.append({"title": "Near-duplicate similarity (each record's closest candidate)",
                    "note": f"threshold {number(t)}: a record at or above it is a candidate, then verified on its "
                            "words; only verified ones are set aside",
                    "svg": plots.histogram_chart(near["similarity_histogram"], threshold=t, x_title="cosine similarity",
                                                 rule_label=f"threshold {number(t)}")})
    outlier = (checks.get("embedding_outlier") or {}).get("metrics") or {}
    if outlier.get("z_histogram") and outlier.get("z") is not None:
        z = float(outlier["z"])
        out.append({"title": "Embedding outlier score (robust z-score within the record's task)",
                    "note": f"a record above z = {number(z)} is an outlier (the judged records only)",
                    "svg": plots.histogram_chart(outlier["z_histogram"], threshold=z, x_title="robust z-score",
                                                 rule_label=f"z = {number(z)}")})
    return [d for d in out if d["svg"] is not None]


def _breakdown(b: Breakdown, limit: int = BREAKDOWN_ROWS) -> dict[str, Any]:
    keys = sorted(b.records, key=lambda k: (-b.quarantined[k], -b.quarantined[k] / b.records[k], k))
    rows = []
    for key in keys[:limit]:
        n, q = b.records[key], b.quarantined[key]
        top = b.reasons.get(key)
        rows.append({"key": clip(key, 80), "records": n, "quarantined": q, "rate": f"{q / n:.1%}" if n else "",
                     "top": ", ".join(f"{r} ({c})" for r, c in top.most_common(2)) if top else ""})
    return {"rows": rows, "more": max(0, len(keys) - limit)}


def _checks(summary: dict[str, Any]) -> list[dict[str, Any]]:
    status: dict[str, dict[str, str]] = summary.get("check_status") or {name: {"status": "ok"}
                                                                          for name in summary["checks"]}
    checks = []
    for name, st in status.items():
        result = summary["checks"].get(name)  # None: turned off, listed so the reader sees what did not run
        checks.append({"name": name, "status": st["status"], "reason": st.get("reason"), "result": result,
                       "artifacts": list((result or {}).get("artifacts", {}).items())})
    return checks
