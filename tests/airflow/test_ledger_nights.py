"""The contributor ledger and source diversity across nights, through Airflow (``dag.test()`` of the nightly DAG on
SQLite), on real records of the bundled slice with contributors assigned here:

* night 1: alice, bob and carol send 500 records; carol sends almost all of one task (a diversity warning);
* night 2: 500 more, bob resends 30 of his records (exact copies: flagged), and mallory, never seen before, sends
  120 records against a first-night cap of 40 (the policy file sets it): 80 are held and she is named as flooding,
  in the alert and in the report; the night is then rerun (cleared), and the ledger does not count it twice;
* night 3: everyone again, mallory included: no longer new, not capped.

Trust moves as the gate's findings say: alice's rises and narrows with clean nights, bob's falls with his copies.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pyarrow.parquet as pq
import pytest

from tests.airflow.conftest import nightly_conf
from tests.conftest import slice_records, write_jsonl
from tunegate.core.alerts import build_alert
from tunegate.core.ledger import load_ledger

pytestmark = [pytest.mark.airflow, pytest.mark.slow]  # whole DAG runs: left out of `make test-fast`

CREW = ("alice", "bob", "carol")
DAYS = ("2026-06-01", "2026-06-02", "2026-06-03")


def _summary(data_root: Path, day: str) -> dict[str, Any]:
    return json.loads((data_root / "tunegate_nightly" / day / "summary.json").read_text(encoding="utf-8"))


def _crew(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [dict(r, contributor=CREW[i % 3]) for i, r in enumerate(records)]


@pytest.fixture(scope="module")
def ledger_nights(dagbag: Any, data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    tmp = tmp_path_factory.mktemp("ledger-nights")
    records = slice_records()
    random.Random(17).shuffle(records)
    one = _crew(records[:500])
    task = Counter(r["task"] for r in one).most_common(1)[0][0]
    for r in one:
        if r["task"] == task:
            r["contributor"] = "carol"
    two = _crew(records[500:1000])
    two += [dict(r, id=f"again-{r['id']}") for r in two if r["contributor"] == "bob"][:30]
    two += [dict(r, contributor="mallory") for r in records[1000:1120]]
    three = _crew(records[1120:1420]) + [dict(r, contributor="mallory") for r in records[1420:1480]]
    for day, batch in zip(DAYS, (one, two, three), strict=True):
        folder = tmp / "landing" / day
        folder.mkdir(parents=True)
        write_jsonl(folder / "batch.jsonl", batch)
    policy = tmp / "policy.yaml"
    policy.write_text("checks:\n  contributor_policy:\n    new_contributor_max_records: 40\n"
                      "  source_diversity:\n    min_task_records: 20\n", encoding="utf-8")
    history = tmp / "history"
    conf = nightly_conf(input_uri=str(tmp / "landing") + "/{{ ds }}", history_dir=str(history),
                        policy_file=str(policy))
    dag = dagbag.get_dag("tunegate_nightly")
    runs, summaries, ledgers = {}, {}, {}
    for day in DAYS:
        runs[day] = dag.test(logical_date=datetime.fromisoformat(day).replace(tzinfo=UTC), run_conf=conf)
        summaries[day] = _summary(data_root, day)
        ledgers[day] = load_ledger(history)
        if day == DAYS[1]:  # a cleared night: rerun before the next night
            runs["rerun"] = dag.test(logical_date=datetime.fromisoformat(day).replace(tzinfo=UTC), run_conf=conf)
            summaries["rerun"] = _summary(data_root, day)
            ledgers["rerun"] = load_ledger(history)
    return SimpleNamespace(runs=runs, summaries=summaries, ledgers=ledgers, history=history, task=task,
                           mallory=[r["id"] for r in two if r["contributor"] == "mallory"], data_root=data_root)


def test_every_night_runs_and_enters_the_ledger(ledger_nights: SimpleNamespace) -> None:
    for name, run in ledger_nights.runs.items():
        assert str(run.state) == "success", name
    files = sorted(p.name for p in (ledger_nights.history / "ledger" / "nights").iterdir())
    assert files == [f"tunegate_nightly%2F{day}.parquet" for day in DAYS]
    final = ledger_nights.ledgers[DAYS[2]]
    assert final.nights == [f"tunegate_nightly/{day}" for day in DAYS]
    # every published record counts once, under its contributor
    published = sum(ledger_nights.summaries[d]["accepted"] + ledger_nights.summaries[d]["quarantined"] for d in DAYS)
    assert sum(e.counts.submitted for e in final.of("contributor")) == published


def test_trust_moves_as_the_findings_say(ledger_nights: SimpleNamespace) -> None:
    first, second = ledger_nights.ledgers[DAYS[0]], ledger_nights.ledgers[DAYS[1]]
    alice1, alice2 = first.get("contributor", "alice"), second.get("contributor", "alice")
    bob1, bob2 = first.get("contributor", "bob"), second.get("contributor", "bob")
    assert alice1 and alice2 and bob1 and bob2
    assert alice2.trust.score > alice1.trust.score and alice2.trust.high - alice2.trust.low < (
        alice1.trust.high - alice1.trust.low)
    assert bob2.counts.reasons["exact_duplicate"] >= 30 and bob2.trust.score < bob1.trust.score
    movers = ledger_nights.summaries[DAYS[1]]["ledger"]["movers"]
    assert movers[0]["name"] == "bob" and movers[0]["change"] < 0


def test_a_flooding_new_contributor_is_held_beyond_the_cap_and_named(ledger_nights: SimpleNamespace) -> None:
    s = ledger_nights.summaries[DAYS[1]]
    run_dir = ledger_nights.data_root / "tunegate_nightly" / DAYS[1]
    quarantine = {r["id"]: r["reasons"] for r in pq.read_table(run_dir / "quarantine.parquet").to_pylist()}
    held = {rid for rid, reasons in quarantine.items() if "contributor_new_volume" in reasons}
    assert held == set(ledger_nights.mallory[40:])
    assert s["ledger"]["flooding"] == ["mallory"]
    alert = build_alert(s)
    assert "new contributor 'mallory' floods the night: 80 records over the first-night cap held" in alert.text()
    assert any("'mallory'" in w for w in alert.alerts)  # the check's warning too
    html = (run_dir / "report.html").read_text(encoding="utf-8")
    assert "New contributors flooding tonight:</b> <code>mallory</code>" in html
    # the next night she is known: not capped
    assert ledger_nights.summaries[DAYS[2]]["checks"]["contributor_policy"]["metrics"]["new_over_cap"] == {}
    assert "mallory" not in {r["name"] for r in ledger_nights.summaries[DAYS[2]]["ledger"]["new"]}


def test_a_rerun_does_not_count_twice(ledger_nights: SimpleNamespace) -> None:
    before, after = ledger_nights.ledgers[DAYS[1]], ledger_nights.ledgers["rerun"]
    assert after.nights == before.nights
    assert {k: e.to_json() for k, e in after.entries.items()} == {k: e.to_json() for k, e in before.entries.items()}
    assert ledger_nights.summaries["rerun"]["history"]["ledger"]["replaced"] is True
    # the rerun was judged against the ledger without itself: the same flood, the same movers
    assert ledger_nights.summaries["rerun"]["ledger"]["flooding"] == ["mallory"]
    assert ledger_nights.summaries["rerun"]["ledger"]["movers"] == ledger_nights.summaries[DAYS[1]]["ledger"]["movers"]


def test_a_task_one_contributor_dominates_is_reported(ledger_nights: SimpleNamespace) -> None:
    s = ledger_nights.summaries[DAYS[0]]
    [issue] = s["checks"]["source_diversity"]["issues"]
    assert issue["reason"] == "task_dominated" and ledger_nights.task in issue["message"]
    assert any(a.startswith("source_diversity:") for a in s["alerts"])
    html = (ledger_nights.data_root / "tunegate_nightly" / DAYS[0] / "report.html").read_text(encoding="utf-8")
    assert f"<code>{ledger_nights.task}</code>: 100% of" in html
