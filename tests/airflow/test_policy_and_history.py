"""The nightly DAG as deployed: configured by a policy file (no Python edits), with the history across nights.

* A policy file turns one check off and changes another's option; the run honours both.
* The ``checks`` param, a list, reaches the scan task as a list (native rendering), not as its string.
* Three nights in a row through Airflow on real records: the third night carries light edits of records the
  first night accepted, and they are quarantined as cross-night near-duplicates; rerunning night two leaves
  the history's record count unchanged (its contribution is replaced, not added twice, and the rerun is not
  compared against itself).
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pyarrow.parquet as pq
import pytest

from tests.airflow.conftest import nightly_conf
from tests.conftest import slice_records, write_jsonl
from tests.core.test_near_duplicate import light_edit

pytestmark = [pytest.mark.airflow, pytest.mark.slow]  # whole DAG runs: left out of `make test-fast`


def _conf(**params: Any) -> dict[str, Any]:
    return nightly_conf(**params)


def _summary(data_root: Path, day: str) -> dict[str, Any]:
    return json.loads((data_root / "tunegate_nightly" / day / "summary.json").read_text(encoding="utf-8"))


def _manifest(history: Path) -> dict[str, Any]:
    return json.loads((history / "manifest.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def configured(dagbag: Any, data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    tmp = tmp_path_factory.mktemp("configured")
    policy = tmp / "policy.yaml"
    policy.write_text("checks:\n  embedding_outlier: false\n  near_duplicate:\n    threshold: 0.97\n"
                      "suites: [instruction_record]\n", encoding="utf-8")
    dag = dagbag.get_dag("tunegate_nightly")
    dagrun = dag.test(logical_date=datetime(2026, 2, 1, tzinfo=UTC),
                      run_conf=_conf(policy_file=str(policy), history_dir=str(tmp / "history")))
    return SimpleNamespace(dagrun=dagrun, summary=_summary(data_root, "2026-02-01"), history=tmp / "history")


def test_a_policy_file_turns_a_check_off_and_changes_an_option(configured: SimpleNamespace) -> None:
    assert str(configured.dagrun.state) == "success"
    s = configured.summary
    assert s["check_status"]["embedding_outlier"] == {"status": "disabled", "reason": "turned off by the policy"}
    assert "embedding_outlier" not in s["checks"]
    assert s["checks"]["near_duplicate"]["metrics"]["threshold"] == 0.97
    assert s["policy"]["checks"]["near_duplicate"] == {"threshold": 0.97}
    # the rest of the gate still ran with its defaults; the suites are the policy's
    assert {"exact_duplicate", "near_duplicate", "poison_trigger", "poison_content",
            "gx_instruction_record"} <= set(s["checks"])
    assert "gx_instruction_quality" not in s["checks"]
    # the night entered the history the param named, under its date
    assert _manifest(configured.history)["batches"][0]["batch_id"] == "tunegate_nightly/2026-02-01"


def test_the_checks_param_is_a_real_list(dagbag: Any, data_root: Path, tmp_path: Path) -> None:
    dag = dagbag.get_dag("tunegate_nightly")
    dagrun = dag.test(logical_date=datetime(2026, 2, 2, tzinfo=UTC),
                      run_conf=_conf(checks=["exact_duplicate"], history_dir=""))
    assert str(dagrun.state) == "success"
    s = _summary(data_root, "2026-02-02")
    assert {k: v["status"] for k, v in s["check_status"].items() if not k.startswith("gx_")} == {
        "record_size": "disabled", "exact_duplicate": "ok", "near_duplicate": "disabled",
        "embedding_outlier": "disabled", "poison_trigger": "disabled", "poison_content": "disabled",
        "contributor_policy": "disabled", "source_diversity": "disabled"}
    assert s["check_status"]["near_duplicate"] == {"status": "disabled", "reason": "not run (the run's checks)"}
    assert "history" not in s  # history_dir "" means no history


def test_a_bad_policy_fails_the_run_with_a_message_naming_the_key(dagbag: Any, tmp_path: Path) -> None:
    policy = tmp_path / "bad.yaml"
    policy.write_text("checks:\n  near_duplicate:\n    treshold: 0.9\n", encoding="utf-8")
    dag = dagbag.get_dag("tunegate_nightly")
    failures: list[BaseException | None] = []
    task = dag.get_task("ingest")  # the first task that reads the policy (its input: section)
    saved = task.on_failure_callback
    task.on_failure_callback = [lambda context: failures.append(context.get("exception"))]
    try:
        dagrun = dag.test(logical_date=datetime(2026, 2, 3, tzinfo=UTC), run_conf=_conf(policy_file=str(policy)))
    finally:
        task.on_failure_callback = saved
    assert str(dagrun.state) == "failed"
    [exc] = failures
    assert type(exc).__name__ == "AirflowFailException"  # configuration: never retried
    assert "checks.near_duplicate: unknown option 'treshold'" in str(exc)
    assert "threshold (default None)" in str(exc)


# --------------------------------------------------------------------------------------------------
# three nights


@pytest.fixture(scope="module")
def nights(dagbag: Any, data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    tmp = tmp_path_factory.mktemp("nights")
    records = slice_records()
    random.Random(7).shuffle(records)
    one, two, three = records[:500], records[500:1000], records[1000:1400]
    rng = random.Random(11)
    long_inputs = [r for r in one if len(r["input"]) >= 80][:20]
    edits = [dict(light_edit(r, rng), id=f"edit-of-{r['id']}") for r in long_inputs]
    inputs = {}
    for day, batch in (("2026-03-01", one), ("2026-03-02", two), ("2026-03-03", three + edits)):
        folder = tmp / "landing" / day
        folder.mkdir(parents=True)
        write_jsonl(folder / "batch.jsonl", batch)
        inputs[day] = folder
    history = tmp / "history"
    # the input is templated per night, as a deployment points it at its bucket's date prefix
    conf = _conf(input_uri=str(tmp / "landing") + "/{{ ds }}", history_dir=str(history))
    dag = dagbag.get_dag("tunegate_nightly")
    runs, counts, summaries = {}, {}, {}
    rerun: dict[str, Any] = {}
    for day in ("2026-03-01", "2026-03-02", "2026-03-03"):
        runs[day] = dag.test(logical_date=datetime.fromisoformat(day).replace(tzinfo=UTC), run_conf=conf)
        counts[day] = _manifest(history)["count"]
        summaries[day] = _summary(data_root, day)
        if day == "2026-03-02":  # a cleared night: rerun before the next night changes the history
            run = dag.test(logical_date=datetime(2026, 3, 2, tzinfo=UTC), run_conf=conf)
            rerun = {"run": run, "count": _manifest(history)["count"], "summary": _summary(data_root, day),
                     "batches": len(_manifest(history)["batches"])}
    return SimpleNamespace(runs=runs, counts=counts, rerun=rerun, history=history, edits=edits,
                           summaries=summaries, data_root=data_root)


def test_each_night_is_published_and_enters_the_history(nights: SimpleNamespace) -> None:
    for day, run in nights.runs.items():
        assert str(run.state) == "success", day
        s = nights.summaries[day]
        assert s["verdict"] in ("pass", "quarantine"), day
        assert s["history"]["batch_id"] == f"tunegate_nightly/{day}"
    accepted = [nights.summaries[d]["accepted"] for d in sorted(nights.runs)]
    c1, c2, c3 = (nights.counts[d] for d in sorted(nights.runs))
    # every accepted record enters once (a record whose content is already there is not added again)
    assert 0 < c1 <= accepted[0] and c1 < c2 <= c1 + accepted[1] and c2 < c3 <= c2 + accepted[2]
    assert [b["batch_id"] for b in _manifest(nights.history)["batches"]] == [
        f"tunegate_nightly/{d}" for d in ("2026-03-01", "2026-03-02", "2026-03-03")]


def test_edits_of_an_earlier_night_are_quarantined_as_cross_night_near_duplicates(nights: SimpleNamespace) -> None:
    run_dir = nights.data_root / "tunegate_nightly" / "2026-03-03"
    quarantine = pq.read_table(run_dir / "quarantine.parquet").to_pylist()
    flagged = {r["id"]: r for r in quarantine if "near_duplicate" in r["reasons"]}
    edit_ids = {e["id"] for e in nights.edits}
    caught = edit_ids & set(flagged)
    assert len(caught) >= 19, sorted(edit_ids - caught)  # light edits: at most one may score under the threshold
    for rid in caught:
        [evidence] = [f for f in flagged[rid]["findings"] if f["reason"] == "near_duplicate"]
        detail = json.loads(evidence["detail"])
        assert detail["in"] == "history"
        assert detail["representative"] == rid.removeprefix("edit-of-")
        assert detail["history_batch"] == "tunegate_nightly/2026-03-01"
    # the rest of night three is new data: almost nothing else is a near-duplicate
    assert len(set(flagged) - edit_ids) <= 5


def test_rerunning_night_two_leaves_the_history_count_unchanged(nights: SimpleNamespace) -> None:
    rerun, first = nights.rerun, nights.summaries["2026-03-02"]
    assert str(rerun["run"].state) == "success"
    assert rerun["count"] == nights.counts["2026-03-02"]
    assert rerun["batches"] == 2
    # the rerun was compared against the history without its own earlier contribution: same verdict
    # (without that, ~99% of it would be near-duplicates of itself and the night would halt)
    s = rerun["summary"]
    assert (s["verdict"], s["accepted"], s["reasons"]) == (first["verdict"], first["accepted"], first["reasons"])
    assert s["history"]["batch_id"] == "tunegate_nightly/2026-03-02"


def test_a_rerun_after_later_nights_replaces_its_contribution(tmp_path: Path) -> None:
    """Core level, same publish step: a night rerun after the history moved on replaces its records."""
    from tunegate.core.history import update_history
    from tunegate.core.pipeline import scan

    records = slice_records()[:600]
    hist = tmp_path / "history"
    first = write_jsonl(tmp_path / "a.jsonl", records[:300])
    second = write_jsonl(tmp_path / "b.jsonl", records[300:])
    scan([str(first)], tmp_path / "night-1", history_dir=str(hist))
    scan([str(second)], tmp_path / "night-2", history_dir=str(hist))
    total = _manifest(hist)["count"]
    # night 1 is rerun on a corrected input: 50 fewer records
    write_jsonl(first, records[:250])
    summary = scan([str(first)], tmp_path / "night-1", history_dir=str(hist))
    assert summary["history"]["replaced"] > 0
    manifest = _manifest(hist)
    assert [b["batch_id"] for b in manifest["batches"]] == ["night-2", "night-1"]
    assert manifest["count"] == total - summary["history"]["replaced"] + summary["history"]["added"]
    assert manifest["count"] < total
    # publishing the same file again adds nothing
    again = update_history(hist, tmp_path / "night-1" / "accepted.parquet", batch_id="night-1")
    assert again["added"] == 0 and _manifest(hist)["count"] == manifest["count"]
