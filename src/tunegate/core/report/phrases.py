"""The suspicious-phrase table: what the poison scans reported in their metrics, one row per phrase.

``poison_trigger`` reports trigger phrases planted in prompts (with their label concentration per task);
``poison_content`` reports names woven into responses (with their spread over groups). Both are read from
``summary["checks"][name]["metrics"]["suspicious_phrases"]``; the example records come from the quarantine.
"""

from __future__ import annotations

from typing import Any

from tunegate.core.report.evidence import number

_KINDS = {"poison_trigger": "trigger-phrase poisoning", "poison_content": "content injection"}


def suspicious_phrases(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per reported phrase, strongest evidence first (every phrase, none clipped)."""
    rows: list[dict[str, Any]] = []
    for check, kind in _KINDS.items():
        metrics = ((summary.get("checks") or {}).get(check) or {}).get("metrics") or {}
        for p in metrics.get("suspicious_phrases") or []:
            rows.append(_row(check, kind, p))
    return sorted(rows, key=lambda r: (-r["evidence_value"], r["phrase"]))


def _row(check: str, kind: str, p: dict[str, Any]) -> dict[str, Any]:
    if check == "poison_trigger":
        tasks = [{"task": name, "concentrated": t.get("concentrated"), "records": t.get("records"),
                  "share": number(t["concentrated"] / t["records"]) if t.get("records") else "",
                  "outcome": str(t.get("outcome", "")), "base_rate": number(float(t.get("base_rate", 0.0)))}
                 for name, t in (p.get("tasks") or {}).items()]
        task_count = int(p.get("task_count", len(tasks)))
        facts = [("exclusivity", number(float(p.get("exclusivity", 0.0)))),
                 ("label inconsistent", number(int(p.get("label_inconsistent", 0))))]
        reasons: tuple[str, ...] = ("trigger_phrase", "label_inconsistent", "degenerate_output")
    else:
        tasks = [{"task": name, "concentrated": n, "records": None, "share": "", "outcome": "name in the response",
                  "base_rate": ""} for name, n in (p.get("group_spread") or {}).items()]
        task_count = int(p.get("groups", len(tasks)))
        facts = [("in prompts", number(int(p.get("in_prompts", 0)))), ("expected", number(float(p.get("expected", 0)))),
                 ("capitalised", number(float(p.get("capitalized", 0.0))))]
        new = p.get("new_to_source")
        if isinstance(new, dict):  # a name in one source, new there against its earlier nights
            facts.append(("new in its source", f"{new.get('group')}: {number(int(new.get('tonight', 0)))} responses "
                                                f"tonight, {number(int(new.get('before', 0)))} of "
                                                f"{number(int(new.get('responses_before', 0)))} over "
                                                f"{new.get('nights')} earlier nights (p {new.get('p')})"))
        grown = p.get("new_in_history")
        if isinstance(grown, dict):  # a name the prompts explain, unexplained far more often than on earlier nights
            facts.append(("new against earlier nights",
                          f"{number(int(grown.get('tonight', 0)))} unexplained responses naming it tonight where "
                          f"{number(float(grown.get('expected', 0.0)))} were expected from "
                          f"{number(int(grown.get('before', 0)))} of {number(int(grown.get('responses_before', 0)))} "
                          f"over {grown.get('nights')} earlier nights (p {grown.get('p')})"))
        reasons = ("injected_content",)
    evidence = float(p.get("evidence", 0.0))
    return {"check": check, "kind": kind, "phrase": str(p["phrase"]), "aliases": list(p.get("aliases") or []),
            "records": int(p.get("records", 0)), "task_count": task_count, "tasks": tasks,
            "contributors": dict(p.get("contributors") or {}), "evidence": number(evidence),
            "evidence_value": evidence, "facts": facts, "reasons": reasons}
