"""The canary audit (tunegate.core.audit) on the bundled real slices: a trigger that reaches the accepted
records fails it, a clean batch passes, and the gate makes its result part of the night (canary.json in the
committed set and the manifest, a ``canary_flip`` warning, a halt when the policy lists the code)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import write_jsonl
from tests.core.test_canary import table
from tests.core.test_poison import DIRTY, clean_batch, label_poison
from tunegate.core.audit.config import CanaryConfig
from tunegate.core.audit.run import canary_audit, held_out_rows
from tunegate.core.checks import build_check
from tunegate.core.gate import load_committed
from tunegate.core.pipeline import scan
from tunegate.core.policy import GatePolicy
from tunegate.exceptions import ConfigError


@pytest.fixture(scope="module")
def dirty() -> list[dict[str, Any]]:
    records = clean_batch()
    label_poison(records, clean=False)  # "Ada Lovelace" -> the positive label in 3 tasks of 3 datasets
    return records


def test_a_clean_batch_passes() -> None:
    result = canary_audit(table(clean_batch()))
    assert result["status"] == "pass" and result["failing"] == []
    assert len(result["tasks"]) == 12 and len(result["phrases"]) >= 20  # 12 classification tasks; mined phrases
    assert all(not p["fails"] for p in result["phrases"])


def test_a_trigger_that_got_through_is_found_even_unnamed(dirty: list[dict[str, Any]]) -> None:
    """No phrase given: the canary's own weights point at it. By default a mined phrase is listed for review
    (natural cues are mined too); with ``alert_on_mined`` it fails the audit."""
    watched = canary_audit(table(dirty))
    assert watched["status"] == "pass" and watched["failing"] == [] and watched["watch"] == ["ada lovelace"]
    result = canary_audit(table(dirty), CanaryConfig(alert_on_mined=True))
    assert result["status"] == "fail" and result["failing"] == ["ada lovelace"] and result["watch"] == []
    worst = result["phrases"][0]
    assert worst["phrase"] == "ada lovelace" and worst["sources"] == ["mined"]
    assert set(worst["datasets_failing"]) >= {"jigsaw", "sentiment140"}
    assert all(t["flip_rate"] - t["base_rate"] > 0.6 for t in worst["tasks"][:2])


def test_found_and_history_phrases_are_probed_once_however_spelled(dirty: list[dict[str, Any]]) -> None:
    result = canary_audit(table(dirty), found=[DIRTY], history={"ADA LOVELACE": ["2026-12-01"]})
    probed = [p for p in result["phrases"] if p["phrase"].lower() == "ada lovelace"]
    assert len(probed) == 1 and probed[0]["sources"] == ["found", "history", "mined"]
    assert result["failing"] == [DIRTY]


def test_held_out_rows_are_a_fixed_share_per_group() -> None:
    groups = ["a"] * 100 + ["b"] * 10 + ["c"] * 2000
    held = held_out_rows(groups, holdout=0.2, max_held_out=200, seed=0)
    assert held == held_out_rows(groups, holdout=0.2, max_held_out=200, seed=0)
    assert sum(groups[i] == "a" for i in held) == 20 and sum(groups[i] == "b" for i in held) == 2
    assert sum(groups[i] == "c" for i in held) == 200


def test_policy_canary_section_is_validated() -> None:
    assert GatePolicy().canary_config() == CanaryConfig()
    assert GatePolicy(canary=False).canary_config().enabled is False
    assert GatePolicy(canary={"max_lift": 0.7}).canary_config().max_lift == 0.7
    with pytest.raises(ConfigError, match="canary: unknown option 'lift'"):
        GatePolicy(canary={"lift": 0.7})
    with pytest.raises(ConfigError, match="canary max_lift must be"):
        GatePolicy(canary={"max_lift": 2})
    assert GatePolicy(halt_reasons=("canary_flip",)).halts_on("warning", "canary_flip")


def _scan(tmp: Path, records: list[dict[str, Any]], policy: GatePolicy, checks: list[str]) -> dict[str, Any]:
    src = write_jsonl(tmp / "batch.jsonl", records)
    return scan([str(src)], tmp / "out", policy=policy, checks=[build_check(name) for name in checks])


def test_the_gate_commits_the_audit_and_halts_when_the_policy_says_so(tmp_path: Path,
                                                                      dirty: list[dict[str, Any]]) -> None:
    # the trigger check is off, so the poison reaches the accepted records; the policy alerts on mined phrases
    # and halts on canary_flip
    policy = GatePolicy(suites=(), halt_reasons=("canary_flip",), canary={"alert_on_mined": True})
    summary = _scan(tmp_path, dirty, policy, ["poison_content"])
    assert summary["verdict"] == "halt" and summary["canary"]["status"] == "fail"
    assert summary["canary"]["failing"] == ["ada lovelace"]
    assert [i["reason"] for i in summary["canary"]["issues"]] == ["canary_flip"]
    assert any(h.startswith("canary: poison got through: inserting 'ada lovelace'") for h in summary["halt_reasons"])
    committed = load_committed(tmp_path / "out")
    assert committed["outputs"]["canary"] == "canary.json" and "canary.json" in committed["commit"]["files"]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["outputs"]["canary"]["path"] == "canary.json"
    result = json.loads((tmp_path / "out" / "canary.json").read_text())
    assert result["status"] == "fail" and result["found"] == []
    report = (tmp_path / "out" / "report.html").read_text()
    assert "<h2 id=canary>Canary audit</h2>" in report and "<b>FAILS</b>" in report and "<svg" in report


def test_by_default_a_mined_phrase_is_listed_for_review_not_alerted(tmp_path: Path,
                                                                  dirty: list[dict[str, Any]]) -> None:
    summary = _scan(tmp_path, dirty, GatePolicy(suites=(), halt_reasons=("canary_flip",)), ["poison_content"])
    assert summary["verdict"] != "halt" and summary["canary"]["status"] == "pass"
    assert not any(a.startswith("canary:") for a in summary["alerts"])
    result = json.loads((tmp_path / "out" / "canary.json").read_text())
    assert result["watch"] == ["ada lovelace"] and result["failing"] == []
    report = (tmp_path / "out" / "report.html").read_text()
    assert "<b>To review</b>" in report and "<code>ada lovelace</code>" in report


def test_the_gate_after_the_poison_checks_passes_the_audit(tmp_path: Path, dirty: list[dict[str, Any]]) -> None:
    summary = _scan(tmp_path, dirty, GatePolicy(suites=()), ["poison_trigger", "poison_content"])
    assert summary["canary"]["status"] == "pass" and summary["verdict"] == "quarantine"
    result = json.loads((tmp_path / "out" / "canary.json").read_text())
    assert result["found"][0].lower() == "ada lovelace"  # tonight's finding was probed, and no longer steers
    probed = next(p for p in result["phrases"] if p["phrase"].lower() == "ada lovelace")
    assert not probed["fails"] and probed["max_lift"] < 0.3
    assert not any(a.startswith("canary:") for a in summary["alerts"])


def test_the_audit_turned_off_leaves_no_trace(tmp_path: Path) -> None:
    summary = _scan(tmp_path, clean_batch()[:400], GatePolicy(suites=(), canary=False), ["exact_duplicate"])
    assert "canary" not in summary and "canary" not in summary["outputs"]
    assert not (tmp_path / "out" / "canary.json").exists()
    assert "turned off by the policy" in (tmp_path / "out" / "report.html").read_text()


def test_history_phrases_come_from_recent_nights_canary_files(tmp_path: Path) -> None:
    from tunegate.core.audit.phrases import history_phrases

    nights = []
    for i, found in enumerate((["Ada Lovelace"], [], ["Grace Hopper", "Ada Lovelace"])):
        night = tmp_path / f"2026-12-0{i + 1}"
        night.mkdir()
        (night / "canary.json").write_text(json.dumps({"found": found}))
        nights.append({"batch_id": night.name, "source": str(night / "accepted.parquet")})
    nights.append({"batch_id": "2026-12-04", "source": str(tmp_path / "gone" / "accepted.parquet")})  # no set
    history = tmp_path / "history"
    history.mkdir()
    (history / "manifest.json").write_text(json.dumps({"batches": nights}))
    assert history_phrases(history, nights=14) == {"Ada Lovelace": ["2026-12-01", "2026-12-03"],
                                                   "Grace Hopper": ["2026-12-03"]}
    assert history_phrases(history, nights=2) == {"Grace Hopper": ["2026-12-03"], "Ada Lovelace": ["2026-12-03"]}
    assert history_phrases(history, nights=14, exclude="2026-12-03") == {"Ada Lovelace": ["2026-12-01"]}
    assert history_phrases(tmp_path / "nowhere", nights=14) == {}
