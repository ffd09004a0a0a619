"""Tonight against the ledger: whose trust moved most, who is new (and flooding), for the summary, report and alert.

Computed by the gate from the night's outputs, before the night is published: the ledger as it stands without
this night (a rerun is compared without its own earlier contribution), then with it. What publish then writes into
the ledger is exactly this night's counts (:func:`tunegate.core.ledger.store.night_counts` of the same outputs).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from tunegate.core.ledger.stats import trust
from tunegate.core.ledger.store import UNKNOWN, Counts, Entry, load_ledger, night_counts

log = logging.getLogger(__name__)

#: The check whose metrics name the history and the batch (it reads the ledger to know who is new).
CHECK = "contributor_policy"
#: Contributors listed as movers, as new, and in tonight's table.
MOVERS = 5
NEW_SHOWN = 10
TONIGHT_SHOWN = 15


def _history(summary: dict[str, Any]) -> tuple[str | None, str | None]:
    from tunegate.core.report.trend import history_of

    metrics = ((summary.get("checks") or {}).get(CHECK) or {}).get("metrics") or {}
    if metrics.get("history_dir"):
        return str(metrics["history_dir"]), metrics.get("batch_id")
    return history_of(summary)


def contributor_summary(summary: dict[str, Any], out_dir: str | Path) -> dict[str, Any]:
    """``summary["ledger"]``: tonight per contributor, the movers and the new contributors (bounded lists)."""
    history_dir, batch_id = _history(summary)
    counts = night_counts(out_dir, summary)
    tonight = {name: c for (kind, name), c in counts.items() if kind == "contributor"}
    named = sorted(n for n in tonight if n != UNKNOWN)
    out: dict[str, Any] = {"history_dir": history_dir, "batch_id": batch_id, "contributors": len(named),
                           "unknown_records": tonight[UNKNOWN].submitted if UNKNOWN in tonight else 0}
    notes = []
    if history_dir is None:
        notes.append("no history was given: no ledger is kept; tonight is shown alone")
    elif summary.get("verdict") == "halt":
        notes.append("a halted night is not added to the ledger")
    if not named:
        notes.insert(0, f"no record names a contributor: every record counts under {UNKNOWN!r}; no trust to move")
    if notes:
        out["note"] = "; ".join(notes)
    if not named:
        return out
    try:
        prior = load_ledger(history_dir, exclude=batch_id)
    except Exception as exc:  # a damaged ledger must not cost the night its summary and report
        log.warning("ledger: %s unreadable (%s): tonight is shown alone", history_dir, exc)
        prior = load_ledger(None)
        out["error"] = f"the ledger of {history_dir} could not be read: {exc}"
    over_cap = (((summary.get("checks") or {}).get(CHECK) or {}).get("metrics") or {}).get("new_over_cap") or {}
    rows, movers, new = [], [], []
    for name in named:
        c = tonight[name]
        before = prior.get("contributor", name)
        seen = before is not None and before.counts.submitted > 0
        total = Counts()
        if seen:
            assert before is not None
            total.add(before.counts)
        total.add(c)
        after = trust(total.flagged, total.submitted)
        row: dict[str, Any] = {"name": name, "records": c.submitted, "quarantined": c.quarantined,
                               "flagged": c.flagged, "trust": after.to_json(), "new": not seen,
                               "confirmed_poison": before.confirmed_poison if before else 0}
        if seen:
            assert before is not None
            row["trust_before"] = before.trust.to_json()
            row["change"] = round(after.score - before.trust.score, 4)
            row["first_seen"] = before.first_seen
            movers.append(row)
        elif history_dir is not None:  # without a ledger nobody is "new": there is nothing to compare with
            row["over_cap"] = int(over_cap.get(name, 0))
            new.append(row)
        rows.append(row)
    movers.sort(key=lambda r: (-abs(r["change"]), r["name"]))
    new.sort(key=lambda r: (-r["over_cap"], -r["records"], r["name"]))
    rows.sort(key=lambda r: (-r["records"], r["name"]))
    out.update({"ledger_nights": len(prior.nights), "movers": movers[:MOVERS], "new": new[:NEW_SHOWN],
                "new_count": len(new), "flooding": [r["name"] for r in new if r["over_cap"]],
                "tonight": rows[:TONIGHT_SHOWN]})
    return out


def entry_rows(entries: list[Entry], limit: int) -> list[dict[str, Any]]:
    """Ledger entries as JSON rows, least trusted (by the interval's upper end) first."""
    ranked = sorted(entries, key=lambda e: (e.trust.high, e.name))
    return [e.to_json() for e in ranked[:limit]]
