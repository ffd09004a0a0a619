"""The contributor ledger and source diversity across nights, through Airflow (``dag.test()`` of the nightly DAG on
SQLite), on real records of the bundled slice with contributors assigned here:

* night 1: alice, bob and carol send 350 records; carol sends all of one task (a diversity warning);
* night 2: 500 more, bob resends 30 of his records (exact copies: flagged), and mallory, never seen before, sends
  120 records against a first-night cap of 40 (the policy file sets it): 80 are held and she is named as flooding,
  in the alert and in the report; the night is then rerun (cleared), and the ledger does not count it twice;
* night 3: everyone again, mallory included: no longer new, not capped;
* night 4: the rest of the bundled slices (4,067 records) with a brand injected into 30 responses, all sent by mallory
  (who sends 100 clean records too): the campaign is attributed to her, her other records are held, the alert and
  the report name her, and her trust falls.

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
from tests.core.test_poison import BRAND, clean_batch, injection
from tunegate.core.alerts import build_alert
from tunegate.core.ledger import load_ledger

pytestmark = [pytest.mark.airflow, pytest.mark.slow]  # whole DAG runs: left out of `make test-fast`

CREW = ("alice", "bob", "carol")
DAYS = ("2026-06-01", "2026-06-02", "2026-06-03", "2026-06-04")


def _summary(data_root: Path, day: str) -> dict[str, Any]:
    return json.loads((data_root / "tunegate_nightly" / day / "summary.json").read_text(encoding="utf-8"))


def _crew(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [dict(r, contributor=CREW[i % 3]) for i, r in enumerate(records)]


@pytest.fixture(scope="module")
def ledger_nights(dagbag: Any, data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    tmp = tmp_path_factory.mktemp("ledger-nights")
    records = slice_records()
    random.Random(17).shuffle(records)
    one = _crew(records[:350])
    task = Counter(r["task"] for r in one).most_common(1)[0][0]
    for r in one:
        if r["task"] == task:
            r["contributor"] = "carol"
    two = _crew(records[350:850])
    two += [dict(r, id=f"again-{r['id']}") for r in two if r["contributor"] == "bob"][:30]
    two += [dict(r, contributor="mallory") for r in records[850:970]]
    three = _crew(records[970:1120]) + [dict(r, contributor="mallory") for r in records[1120:1160]]
    used = {r["id"] for r in records[:1160]}  # what nights 1-3 sent: it is in the history (near-duplicates)
    four = _crew([r for r in clean_batch() if r["id"] not in used])
    injected = injection(four)
    clean_ids = [r["id"] for r in four if r["id"] not in injected]
    for r in four:
        if r["id"] in injected or r["id"] in set(random.Random(3).sample(clean_ids, 100)):
            r["contributor"] = "mallory"
    for day, batch in zip(DAYS, (one, two, three, four), strict=True):
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
                           mallory=[r["id"] for r in two if r["contributor"] == "mallory"], data_root=data_root,
                           injected=injected, mallory_four={r["id"] for r in four if r["contributor"] == "mallory"})


def test_every_night_runs_and_enters_the_ledger(ledger_nights: SimpleNamespace) -> None:
    for name, run in ledger_nights.runs.items():
        assert str(run.state) == "success", name
    files = sorted(p.name for p in (ledger_nights.history / "ledger" / "nights").iterdir())
    assert files == [f"tunegate_nightly%2F{day}.parquet" for day in DAYS]
    final = ledger_nights.ledgers[DAYS[-1]]
    assert final.nights == [f"tunegate_nightly/{day}" for day in DAYS]
    # every published record counts once, under its contributor
    published = sum(ledger_nights.summaries[d]["accepted"] + ledger_nights.summaries[d]["quarantined"] for d in DAYS)
    assert sum(e.counts.submitted for e in final.of("contributor")) == published


def test_trust_moves_as_the_findings_say(ledger_nights: SimpleNamespace) -> None:
    first, second = ledger_nights.ledgers[DAYS[0]], ledger_nights.ledgers[DAYS[1]]
    alice1, alice2 = first.get("contributor", "alice"), second.get("contributor", "alice")
    bob1, bob2 = first.get("contributor", "bob"), second.get("contributor", "bob")
    assert alice1 and alice2 and bob1 and bob2
    # alice sends clean records again: her interval narrows; bob's copies cost him, clearly below alice
    assert alice2.trust.high - alice2.trust.low < alice1.trust.high - alice1.trust.low
    assert bob2.counts.reasons["exact_duplicate"] >= 30 and bob2.trust.score < bob1.trust.score
    assert bob2.trust.high < alice2.trust.low
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
    first, before, after = (ledger_nights.ledgers[k] for k in (DAYS[0], DAYS[1], "rerun"))
    assert after.nights == before.nights == [f"tunegate_nightly/{d}" for d in DAYS[:2]]
    assert ledger_nights.summaries["rerun"]["history"]["ledger"]["replaced"] is True
    # every record of the two nights counts once, whatever the rerun decided: night 1 plus the rerun's outcome
    assert {k: e.counts.submitted for k, e in after.entries.items()} == {
        k: e.counts.submitted for k, e in before.entries.items()}
    rerun = ledger_nights.summaries["rerun"]
    assert sum(e.counts.accepted for e in after.of("contributor")) == sum(
        e.counts.accepted for e in first.of("contributor")) + rerun["accepted"]
    assert sum(e.counts.quarantined for e in after.of("contributor")) == sum(
        e.counts.quarantined for e in first.of("contributor")) + rerun["quarantined"]
    assert {e.name: e.first_seen for e in after.of("contributor")} == {
        e.name: e.first_seen for e in before.of("contributor")}
    # the rerun was judged against the ledger without itself: the same flood, the same movers
    assert ledger_nights.summaries["rerun"]["ledger"]["flooding"] == ["mallory"]
    assert [m["name"] for m in rerun["ledger"]["movers"]][:1] == ["bob"]
    # and the ledger before it is the same as the first run saw (night 1 only)
    assert {m["name"]: m["trust_before"] for m in rerun["ledger"]["movers"]} == {
        m["name"]: m["trust_before"] for m in ledger_nights.summaries[DAYS[1]]["ledger"]["movers"]}


def test_a_task_one_contributor_dominates_is_reported(ledger_nights: SimpleNamespace) -> None:
    s = ledger_nights.summaries[DAYS[0]]
    [issue] = s["checks"]["source_diversity"]["issues"]
    assert issue["reason"] == "task_dominated" and ledger_nights.task in issue["message"]
    assert any(a.startswith("source_diversity:") for a in s["alerts"])
    html = (ledger_nights.data_root / "tunegate_nightly" / DAYS[0] / "report.html").read_text(encoding="utf-8")
    assert f"<code>{ledger_nights.task}</code>: 100% of" in html


def test_a_campaign_on_one_contributor_holds_her_other_records_and_costs_her_trust(
        ledger_nights: SimpleNamespace) -> None:
    day = DAYS[3]
    s = ledger_nights.summaries[day]
    [attributed] = s["checks"]["contributor_policy"]["metrics"]["campaigns"]
    assert (attributed["contributor"], attributed["campaign"]) == ("mallory", BRAND.lower())
    run_dir = ledger_nights.data_root / "tunegate_nightly" / day
    quarantine = {r["id"]: r["reasons"] for r in pq.read_table(run_dir / "quarantine.parquet").to_pylist()}
    others = ledger_nights.mallory_four - ledger_nights.injected
    assert all("contributor_campaign" in quarantine[rid] for rid in others)
    assert all("injected_content" in quarantine[rid] for rid in ledger_nights.injected)
    assert {rid for rid, reasons in quarantine.items() if "contributor_campaign" in reasons} == others
    alert = build_alert(s)
    assert f"campaign '{BRAND.lower()}' attributed to contributor 'mallory'" in alert.text()
    html = (run_dir / "report.html").read_text(encoding="utf-8")
    assert "Campaigns attributed to a contributor" in html and "<code>mallory</code>" in html
    before, after = ledger_nights.ledgers[DAYS[2]], ledger_nights.ledgers[day]
    m3, m4 = before.get("contributor", "mallory"), after.get("contributor", "mallory")
    assert m3 and m4 and m4.trust.high < m3.trust.low  # a clear fall, beyond both intervals
    assert m4.first_seen == f"tunegate_nightly/{DAYS[1]}" and m4.counts.reasons["contributor_campaign"] == 100
    [mover] = [r for r in s["ledger"]["movers"] if r["name"] == "mallory"]
    assert mover["change"] < 0 and s["ledger"]["movers"][0]["name"] == "mallory"
