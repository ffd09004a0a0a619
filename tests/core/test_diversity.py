"""Source diversity per task on the bundled Super-NaturalInstructions slice (contributors assigned here): the
shares, the effective number of contributors, a dominated task as a warning, or a halt for a critical task."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import slice_records, write_jsonl
from tunegate.core.checks.diversity import effective_number
from tunegate.core.pipeline import scan
from tunegate.core.policy import GatePolicy

CREW = ("alice", "bob", "carol", "dave")


def _policy(**diversity: Any) -> GatePolicy:
    return GatePolicy.from_mapping({"checks": ["exact_duplicate", "source_diversity"], "suites": []}).with_overrides(
        checks={"source_diversity": diversity} if diversity else None)


@pytest.fixture(scope="module")
def records() -> list[dict[str, Any]]:
    """The slice with four contributors in turn, except one task, which carol sent 90% of."""
    out = [dict(r, contributor=CREW[i % 4]) for i, r in enumerate(slice_records())]
    task = Counter(r["task"] for r in out).most_common(1)[0][0]
    rows = [r for r in out if r["task"] == task]
    for i, r in enumerate(rows):
        r["contributor"] = "carol" if i % 10 else "alice"
    return out


def _dominated_task(records: list[dict[str, Any]]) -> str:
    return str(Counter(r["task"] for r in records).most_common(1)[0][0])


def test_effective_number_is_the_inverse_simpson_index() -> None:
    assert effective_number(Counter({"a": 10})) == 1.0
    assert effective_number(Counter({"a": 5, "b": 5, "c": 5, "d": 5})) == pytest.approx(4.0)
    assert effective_number(Counter({"a": 9, "b": 1})) == pytest.approx(1 / (0.81 + 0.01))
    assert effective_number(Counter()) == 0.0


def test_a_dominated_task_is_a_warning_with_its_shares(records: list[dict[str, Any]], tmp_path: Path) -> None:
    task = _dominated_task(records)
    s = scan([str(write_jsonl(tmp_path / "b.jsonl", records))], tmp_path / "out", policy=_policy())
    result = s["checks"]["source_diversity"]
    [issue] = result["issues"]
    assert issue["reason"] == "task_dominated" and issue["severity"] == "warning"
    assert f"{task}: 90% of" in issue["message"] and "'carol'" in issue["message"]
    assert s["verdict"] == "quarantine" and any(a.startswith("source_diversity: 1 task(s) dominated") and task in a
                                                for a in s["alerts"])
    metrics = result["metrics"]
    assert [d["task"] for d in metrics["dominated"]] == [task]
    [row] = [t for t in metrics["task_table"] if t["task"] == task]
    n = sum(r["task"] == task for r in records)
    assert row["top_contributor"] == "carol" and row["top_contributor_share"] == pytest.approx(
        round(sum(1 for r in records if r["task"] == task and r["contributor"] == "carol") / n, 4))
    assert row["effective_contributors"] == pytest.approx(1 / (0.9 ** 2 + 0.1 ** 2), abs=0.02)
    assert row["top_source"] == "superni" and row["top_source_share"] == 1.0
    # the other tasks: four contributors in turn, about four effective ones, none dominated
    others = [t for t in metrics["task_table"] if t["task"] != task and t["records"] >= 50]
    assert others and all(t["effective_contributors"] > 3.5 for t in others)
    html = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert "Source diversity per task" in html and f"<code>{task}</code>: 90% of" in html


def test_a_dominated_critical_task_halts(records: list[dict[str, Any]], tmp_path: Path) -> None:
    task = _dominated_task(records)
    s = scan([str(write_jsonl(tmp_path / "b.jsonl", records))], tmp_path / "out",
             policy=_policy(critical_tasks=[task]))
    assert s["verdict"] == "halt"
    assert any(h.startswith("source_diversity: 1 task(s) dominated by one party") for h in s["halt_reasons"])
    assert [i["reason"] for i in s["checks"]["source_diversity"]["issues"]] == ["critical_task_dominated"]


def test_without_contributors_diversity_says_it_did_not_judge(tmp_path: Path) -> None:
    plain = [{k: v for k, v in r.items() if k != "contributor"} for r in slice_records()[:400]]
    s = scan([str(write_jsonl(tmp_path / "b.jsonl", plain))], tmp_path / "out", policy=_policy())
    status = s["check_status"]["source_diversity"]
    assert status["status"] == "insufficient_data" and "no record names a contributor" in status["reason"]
    assert s["verdict"] == "pass"
