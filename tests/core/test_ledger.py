"""The contributor ledger and the contributor policy on real records (the bundled slices; contributors assigned
here, text untouched): campaign attribution on planted poison, blocklist, the new-contributor cap, reruns, confirmed
poison, the trust arithmetic, and the no-op without contributors."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from tests.conftest import slice_records, write_jsonl
from tests.core.test_poison import BRAND, clean_batch, injection, label_poison
from tunegate.core.alerts import build_alert
from tunegate.core.ledger import hypergeometric_tail, load_ledger, trust
from tunegate.core.pipeline import scan
from tunegate.core.policy import GatePolicy
from tunegate.exceptions import ConfigError

CREW = ("alice", "bob", "carol")


def _policy(**checks: Any) -> GatePolicy:
    """Only the checks a test needs (the rest of the gate is tested elsewhere), no GX suites."""
    return GatePolicy.from_mapping({"checks": {"record_size": False, "near_duplicate": False,
                                               "embedding_outlier": False, "poison_trigger": False,
                                               "poison_content": False, **checks}, "suites": []})


def _assign(records: list[dict[str, Any]], names: tuple[str, ...] = CREW) -> list[dict[str, Any]]:
    return [dict(r, contributor=names[i % len(names)]) for i, r in enumerate(records)]


def _quarantine(out: Path) -> dict[str, dict[str, Any]]:
    return {r["id"]: r for r in pq.read_table(out / "quarantine.parquet").to_pylist()}


# --------------------------------------------------------------------------------------------------
# the arithmetic, against scipy's independent implementations


def test_trust_is_the_beta_posterior_with_an_equal_tailed_interval() -> None:
    from scipy.stats import beta

    for flagged, records in ((0, 0), (0, 12), (3, 12), (40, 1000), (1000, 1000)):
        t = trust(flagged, records)
        posterior = beta(0.5 + flagged, 0.5 + records - flagged)
        assert t.score == pytest.approx(1 - posterior.mean())
        assert (t.low, t.high) == pytest.approx((1 - posterior.ppf(0.975), 1 - posterior.ppf(0.025)))
    # more clean records: higher and surer; the same rate on more records: the same place, a narrower interval
    assert trust(0, 400).score > trust(0, 200).score and trust(0, 400).low > trust(0, 200).low
    few, many = trust(3, 30), trust(300, 3000)
    assert few.score == pytest.approx(many.score, abs=0.02) and many.high - many.low < (few.high - few.low) / 2


def test_hypergeometric_tail_is_exact() -> None:
    from scipy.stats import hypergeom

    for k, n_pop, succ, draws in ((30, 5227, 130, 30), (1, 10, 3, 4), (4, 100, 20, 10), (0, 50, 5, 5),
                                  (6, 50, 5, 10), (12, 5227, 1740, 30)):
        assert hypergeometric_tail(k, n_pop, succ, draws) == pytest.approx(hypergeom.sf(k - 1, n_pop, succ, draws),
                                                                          rel=1e-9, abs=1e-300)


# --------------------------------------------------------------------------------------------------
# campaign attribution on planted poison


@pytest.fixture(scope="module")
def campaign_night(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """5,227 real records, ten contributors in turn. Two campaigns are planted: a brand injected into 30 responses,
    all sent by mallory (who also sent 100 clean records), and a dirty-label trigger in 60 prompts, spread over
    everyone like the rest: only the first concentrates on a contributor."""
    tmp = tmp_path_factory.mktemp("campaign")
    records = clean_batch()
    injected = injection(records)
    triggered = label_poison(records, clean=False)
    names = tuple(f"contributor-{i}" for i in range(10))
    records = _assign(records, names)
    clean_ids = [r["id"] for r in records if r["id"] not in injected | triggered]
    mallory_clean = set(random.Random(3).sample(clean_ids, 100))
    for r in records:
        if r["id"] in injected | mallory_clean:
            r["contributor"] = "mallory"
    out = tmp / "night"
    summary = scan([str(write_jsonl(tmp / "batch.jsonl", records))], out,
                   policy=_policy(poison_trigger={}, poison_content={}))
    return {"summary": summary, "out": out, "injected": injected, "triggered": triggered,
            "mallory_clean": mallory_clean}


def test_a_campaign_concentrated_on_one_contributor_holds_their_other_records(campaign_night: dict[str, Any]) -> None:
    s, quarantine = campaign_night["summary"], _quarantine(campaign_night["out"])
    [attributed] = s["checks"]["contributor_policy"]["metrics"]["campaigns"]
    assert (attributed["contributor"], attributed["campaign"], attributed["check"]) == (
        "mallory", BRAND.lower(), "poison_content")
    assert attributed["from_contributor"] == attributed["campaign_records"] == 30
    assert attributed["contributor_records"] == 130 and attributed["p_value"] < 1e-30
    # the campaign's records keep their poison reason; mallory's clean records are held as contributor_campaign
    for rid in campaign_night["injected"]:
        assert "injected_content" in quarantine[rid]["reasons"]
    for rid in campaign_night["mallory_clean"]:
        assert quarantine[rid]["reasons"] == ["contributor_campaign"], rid
    assert s["reasons"]["contributor_campaign"] == 100
    # the trigger campaign was spread over ten contributors: flagged, attributed to none
    assert all("trigger_phrase" in quarantine[rid]["reasons"] for rid in campaign_night["triggered"])
    held = {r["contributor"] for r in quarantine.values() if "contributor_campaign" in r["reasons"]}
    assert held == {"mallory"}


def test_the_alert_and_the_report_name_the_attributed_contributor(campaign_night: dict[str, Any]) -> None:
    s = campaign_night["summary"]
    [issue] = s["checks"]["contributor_policy"]["issues"]
    assert issue["reason"] == "contributor_campaign" and "'mallory'" in issue["message"]
    alert = build_alert(s)
    assert any("'mallory'" in line and BRAND.lower() in line for line in alert.contributors)
    assert "contributors:\n  - campaign 'zephyr motors' attributed to contributor 'mallory'" in alert.text()
    html = (campaign_night["out"] / "report.html").read_text(encoding="utf-8")
    assert "Campaigns attributed to a contributor" in html and "<code>mallory</code>" in html


# --------------------------------------------------------------------------------------------------
# nights: blocklist, the new-contributor cap, trust moving, reruns, confirmed poison


@pytest.fixture(scope="module")
def nights(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("ledger-nights")
    records = slice_records()
    random.Random(5).shuffle(records)
    history = tmp / "history"
    policy = _policy(contributor_policy={"blocklist": ["eve"], "allowlist": ["trent"],
                                         "new_contributor_max_records": 50})
    one = _assign(records[:600]) + [dict(r, contributor="eve") for r in records[600:610]]
    # night two: bob resends 30 of his records (exact copies: flagged), two new contributors of 150 records each
    two = _assign(records[610:1210])
    two += [dict(r, id=f"again-{r['id']}") for r in two if r["contributor"] == "bob"][:30]
    two += [dict(r, contributor="mallory") for r in records[1210:1360]]
    two += [dict(r, contributor="trent") for r in records[1360:1510]]
    out: dict[str, Any] = {"history": history, "dirs": {}, "summaries": {}, "ledgers": {}, "inputs": {}}
    for name, batch in (("night-1", one), ("night-2", two)):
        path = write_jsonl(tmp / f"{name}.jsonl", batch)
        out["inputs"][name] = (path, batch)
        out["dirs"][name] = tmp / name
        out["summaries"][name] = scan([str(path)], tmp / name, history_dir=str(history), policy=policy)
        out["ledgers"][name] = load_ledger(history)
    out["rerun"] = scan([str(out["inputs"]["night-2"][0])], tmp / "night-2", history_dir=str(history), policy=policy)
    out["ledgers"]["rerun"] = load_ledger(history)
    return out


def test_a_blocklisted_contributor_is_set_aside_and_the_first_night_has_no_cap(nights: dict[str, Any]) -> None:
    s = nights["summaries"]["night-1"]
    quarantine = _quarantine(nights["dirs"]["night-1"])
    assert {rid for rid, r in quarantine.items() if r["contributor"] == "eve"} == {
        r["id"] for r in nights["inputs"]["night-1"][1] if r["contributor"] == "eve"}
    assert all(r["reasons"] == ["contributor_blocked"] for r in quarantine.values() if r["contributor"] == "eve")
    metrics = s["checks"]["contributor_policy"]["metrics"]
    assert metrics["blocked"] == {"eve": 10} and metrics["new_over_cap"] == {}
    assert "the ledger has no night yet" in s["check_status"]["contributor_policy"]["reason"]


def test_a_new_contributor_over_the_cap_is_held_beyond_it_and_named(nights: dict[str, Any]) -> None:
    s = nights["summaries"]["night-2"]
    batch = nights["inputs"]["night-2"][1]
    quarantine = _quarantine(nights["dirs"]["night-2"])
    mallory = [r["id"] for r in batch if r["contributor"] == "mallory"]
    # the first 50 in input order pass the cap; the other 100 are held for it (and only for it)
    assert {rid for rid, r in quarantine.items() if "contributor_new_volume" in r["reasons"]} == set(mallory[50:])
    assert not set(mallory[:50]) & set(quarantine)
    # trent is new too, but allowlisted: not capped (still checked like everyone)
    assert s["checks"]["contributor_policy"]["metrics"]["new_over_cap"] == {"mallory": 100}
    assert s["ledger"]["flooding"] == ["mallory"]
    assert {r["name"] for r in s["ledger"]["new"]} == {"mallory", "trent"}
    alert = build_alert(s)
    assert any("'mallory' floods the night" in line for line in alert.contributors)
    assert "mallory" in alert.to_payload()["text"]
    html = (nights["dirs"]["night-2"] / "report.html").read_text(encoding="utf-8")
    assert "New contributors flooding tonight:</b> <code>mallory</code>" in html


def test_trust_moves_with_what_the_gate_found(nights: dict[str, Any]) -> None:
    first, second = nights["ledgers"]["night-1"], nights["ledgers"]["night-2"]
    alice1, alice2 = first.get("contributor", "alice"), second.get("contributor", "alice")
    bob1, bob2 = first.get("contributor", "bob"), second.get("contributor", "bob")
    assert alice1 and alice2 and bob1 and bob2
    assert alice2.trust.score > alice1.trust.score and alice2.trust.low > alice1.trust.low  # clean again: surer
    assert bob2.counts.flagged == 30 and bob2.counts.reasons["exact_duplicate"] == 30
    assert bob2.trust.score < bob1.trust.score and bob2.trust.high < alice2.trust.low  # bob's copies cost him
    # mallory's held records are not evidence against her data: no flags from the cap alone
    mallory = second.get("contributor", "mallory")
    assert mallory and mallory.counts.quarantined == 100 and mallory.counts.flagged == 0
    movers = nights["summaries"]["night-2"]["ledger"]["movers"]
    assert movers[0]["name"] == "bob" and movers[0]["change"] < 0
    # every record of every night counts once, under its contributor and under its source
    assert sum(e.counts.submitted for e in second.of("contributor")) == sum(
        nights["summaries"][n]["accepted"] + nights["summaries"][n]["quarantined"] for n in ("night-1", "night-2"))
    assert alice2.first_seen == "night-1" and alice2.last_seen == "night-2" and alice2.nights == 2


def test_a_rerun_replaces_the_night_instead_of_counting_it_twice(nights: dict[str, Any]) -> None:
    before, after = nights["ledgers"]["night-2"], nights["ledgers"]["rerun"]
    assert nights["rerun"]["history"]["ledger"]["replaced"] is True
    assert after.nights == before.nights == ["night-1", "night-2"]
    assert {k: e.to_json() for k, e in after.entries.items()} == {k: e.to_json() for k, e in before.entries.items()}
    # the rerun was compared with the ledger without itself: mallory is still new, and still capped
    assert nights["rerun"]["checks"]["contributor_policy"]["metrics"]["new_over_cap"] == {"mallory": 100}


def test_confirmed_poison_folds_into_the_ledger(nights: dict[str, Any]) -> None:
    import pyarrow.compute as pc

    from tunegate.core.history.poison import add_known_poison, remove_known_poison

    history = nights["history"]
    table = pq.read_table(nights["dirs"]["night-2"] / "quarantine.parquet")
    bob = table.filter(pc.equal(table.column("contributor"), "bob")).slice(0, 4)
    added = add_known_poison(history, bob, batch_id="night-2", by="test", at="2026-12-03T00:00:00+00:00")
    try:
        assert len(added) == 4
        ledger = load_ledger(history)
        assert ledger.get("contributor", "bob").confirmed_poison == 4  # type: ignore[union-attr]
        assert ledger.get("source", "superni").confirmed_poison == 4  # type: ignore[union-attr]
        assert ledger.get("contributor", "alice").confirmed_poison == 0  # type: ignore[union-attr]
    finally:  # a release overriding the confirmation takes it out again: the ledger follows at once
        remove_known_poison(history, added)
    assert load_ledger(history).get("contributor", "bob").confirmed_poison == 0  # type: ignore[union-attr]


# --------------------------------------------------------------------------------------------------
# no contributors, bad options


def test_without_contributors_the_policy_is_a_no_op_that_says_so(tmp_path: Path) -> None:
    records = [{k: v for k, v in r.items() if k != "contributor"} for r in slice_records()[:300]]
    s = scan([str(write_jsonl(tmp_path / "b.jsonl", records))], tmp_path / "out", history_dir=str(tmp_path / "h"),
             policy=_policy())
    status = s["check_status"]["contributor_policy"]
    assert status["status"] == "insufficient_data" and "no record names a contributor" in status["reason"]
    assert s["checks"]["contributor_policy"]["flagged_records"] == 0
    assert "no record names a contributor" in s["ledger"]["note"]
    ledger = load_ledger(tmp_path / "h")
    unknown = ledger.get("contributor", "(unknown)")
    assert unknown is not None and unknown.counts.submitted == 300  # never dropped: counted under the placeholder


@pytest.mark.parametrize(("options", "message"), [
    ({"blocklist": ["x"], "allowlist": ["x"]}, "on both the blocklist and the allowlist"),
    ({"campaign_alpha": 0}, "campaign_alpha must be a number in (0.0, 0.5]"),
    ({"blocklist": "mallory"}, "blocklist must be a list of non-empty strings"),
    ({"campaign_min_records": 1}, "campaign_min_records must be an integer >= 2"),
])
def test_bad_options_fail_with_what_to_change(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")
                       .replace("]", r"\]").replace(".", r"\.")):
        GatePolicy.from_mapping({"checks": {"contributor_policy": options}})


def test_the_ledger_files_are_one_per_night(nights: dict[str, Any]) -> None:
    files = sorted(p.name for p in (nights["history"] / "ledger" / "nights").iterdir())
    assert files == ["night-1.parquet", "night-2.parquet"]  # no temporary left behind
    meta = json.loads(pq.read_schema(nights["history"] / "ledger" / "nights" / "night-2.parquet").metadata[
        b"tunegate.ledger"])
    assert meta["batch_id"] == "night-2" and meta["first_published"] <= meta["published"]


def test_a_damaged_night_file_says_how_to_recover(tmp_path: Path) -> None:
    from tunegate.core.ledger import night_path
    from tunegate.exceptions import HistoryError

    path = night_path(tmp_path, "night-9")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"PAR1 not really")
    with pytest.raises(HistoryError, match="rerun that night's publish"):
        load_ledger(tmp_path)
