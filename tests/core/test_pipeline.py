"""The whole core flow: conservation of records, exact reason codes, policy, idempotent reruns."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from tests.conftest import NIGHTLY, write_jsonl
from tunegate.core.checks import build_check
from tunegate.core.gate import (
    ACCEPTED_FILE,
    HELD_FILE,
    QUARANTINE_FILE,
    REJECTED_FILE,
    REPORT_FILE,
    SUMMARY_FILE,
    load_committed,
    output_lock,
)
from tunegate.core.pipeline import scan
from tunegate.core.policy import GatePolicy, load_policy
from tunegate.exceptions import ConfigError, InputError, TunegateError


def _ids(path: Path) -> list[str]:
    return pq.read_table(path, columns=["id"]).column("id").to_pylist()


@pytest.fixture(scope="module")
def nightly(tmp_path_factory: pytest.TempPathFactory, gx_check: Any, gx_quality: Any) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("nightly")
    summary = scan([str(NIGHTLY)], out, checks=[build_check("exact_duplicate"), gx_check, gx_quality])
    return out, summary


def test_every_input_record_lands_in_exactly_one_place(nightly: tuple[Path, dict[str, Any]]) -> None:
    out, summary = nightly
    non_blank_lines = [ln for ln in NIGHTLY.read_bytes().splitlines() if ln.strip()]
    accepted, quarantined = _ids(out / ACCEPTED_FILE), _ids(out / QUARANTINE_FILE)
    rejected = (out / REJECTED_FILE).read_text(encoding="utf-8").splitlines()
    assert len(accepted) + len(quarantined) + len(rejected) == len(non_blank_lines) == summary["total"] == 1014
    assert (summary["accepted"], summary["quarantined"], summary["rejected"]) == (1000, 10, 4)
    assert summary["conservation_ok"] is True
    lines = sorted(json.loads(r)["source_line"] for r in rejected)
    all_lines = pq.read_table(out / ACCEPTED_FILE, columns=["source_line"]).column(0).to_pylist() + \
        pq.read_table(out / QUARANTINE_FILE, columns=["source_line"]).column(0).to_pylist() + lines
    assert sorted(all_lines) == list(range(1, 1015))  # no line lost, none counted twice


def test_planted_problems_get_their_exact_reasons(nightly: tuple[Path, dict[str, Any]]) -> None:
    out, summary = nightly
    q = pq.read_table(out / QUARANTINE_FILE).to_pylist()
    by_id = {r["id"]: r for r in q}
    for n in range(3):
        rec = by_id[f"planted-empty-{n}"]
        assert "gx_empty_output" in rec["reasons"]
        assert json.loads(rec["findings"][0]["detail"])["column"] == "output"
    # two of the empty responses sit in classification tasks, where "" is also outside the label set
    assert sorted(len(by_id[f"planted-empty-{n}"]["reasons"]) for n in range(3)) == [1, 2, 2]
    assert by_id["planted-runaway"]["reasons"] == ["gx_overlong_field", "gx_runaway_repetition"]
    dups = [r for r in q if r["reasons"] == ["exact_duplicate"]]
    assert len(dups) == 6
    accepted = set(_ids(out / ACCEPTED_FILE))
    for d in dups:  # the kept copy is the first occurrence, and it was accepted
        assert json.loads(d["findings"][0]["detail"])["duplicate_of"] == d["id"]
        assert d["id"] in accepted
    rejected = [json.loads(r) for r in (out / REJECTED_FILE).read_text(encoding="utf-8").splitlines()]
    errors = sorted(r["error"].split(" (")[0].split(":")[0] for r in rejected)
    assert errors == ["field 'output' must be a string, got list", "invalid JSON", "invalid JSON",
                      "invalid UTF-8 at byte 43"]
    assert summary["verdict"] == "quarantine"
    assert summary["reasons"] == {"exact_duplicate": 6, "gx_empty_output": 3, "gx_label_outside_task_set": 2,
                                  "gx_overlong_field": 1, "gx_runaway_repetition": 1}


def test_summary_carries_inputs_sha256_and_check_counts(nightly: tuple[Path, dict[str, Any]]) -> None:
    import hashlib

    out, summary = nightly
    on_disk = json.loads((out / SUMMARY_FILE).read_text(encoding="utf-8"))
    assert on_disk == summary
    assert summary["inputs"] == [{"path": str(NIGHTLY), "records": 1010, "rejected": 4,
                                  "sha256": hashlib.sha256(NIGHTLY.read_bytes()).hexdigest()}]
    assert summary["checks"]["exact_duplicate"]["reasons"] == {"exact_duplicate": 6}
    gx = summary["checks"]["gx_instruction_record"]
    assert gx["metrics"]["statistics"]["evaluated_expectations"] == 14
    report = (out / REPORT_FILE).read_text(encoding="utf-8")
    assert "QUARANTINE" in report and "planted-runaway" in report and "<svg" in report


def test_rerun_gives_identical_outputs(tmp_path: Path, nightly: tuple[Path, dict[str, Any]], gx_check: Any,
                                       gx_quality: Any) -> None:
    first, _ = nightly
    checks = [build_check("exact_duplicate"), gx_check, gx_quality]
    for _ in range(2):  # the second run overwrites the first in place
        scan([str(NIGHTLY)], tmp_path, checks=checks)
    for name in (ACCEPTED_FILE, QUARANTINE_FILE, REJECTED_FILE, REPORT_FILE):
        assert (tmp_path / name).read_bytes() == (first / name).read_bytes(), name
    a = json.loads((tmp_path / SUMMARY_FILE).read_text(encoding="utf-8"))
    b = json.loads((first / SUMMARY_FILE).read_text(encoding="utf-8"))
    assert {k: v for k, v in a.items() if k != "out_dir"} == {k: v for k, v in b.items() if k != "out_dir"}
    assert not list(tmp_path.glob(".*.tmp")), "temporary files left behind"


def test_critical_expectation_failure_halts(tmp_path: Path, superni_slice: list[dict[str, Any]],
                                            gx_check: Any) -> None:
    """5% empty responses is past the suite's mostly=0.98: the export is broken, the batch halts."""
    records = [dict(r) for r in superni_slice[:200]]
    for r in records[:10]:
        r["output"] = "   "
    path = write_jsonl(tmp_path / "in.jsonl", records)
    summary = scan([str(path)], tmp_path / "out", checks=[gx_check])
    assert summary["verdict"] == "halt"
    # a halted night leaves no accepted.parquet: the 190 passing records are held, and still accounted for
    assert (summary["quarantined"], summary["accepted"], summary["held"]) == (10, 0, 190)
    assert summary["conservation_ok"] is True
    out = tmp_path / "out"
    assert not (out / ACCEPTED_FILE).exists() and summary["outputs"]["held"] == HELD_FILE
    assert pq.read_metadata(out / HELD_FILE).num_rows == 190
    assert "accepted" not in summary["outputs"] and HELD_FILE in summary["commit"]["files"]
    assert any("expect_column_values_to_match_regex(output): 10 of 200 rows unexpected" in h
               for h in summary["halt_reasons"])


def test_policy_thresholds_halt_and_ignore(tmp_path: Path, superni_slice: list[dict[str, Any]]) -> None:
    records = superni_slice[:100] + superni_slice[:30]  # 30 exact duplicates = 23% of the batch
    path = write_jsonl(tmp_path / "in.jsonl", records)
    dup = [build_check("exact_duplicate")]
    assert scan([str(path)], tmp_path / "a", checks=dup)["verdict"] == "quarantine"
    strict = GatePolicy(max_quarantined_fraction=0.2)
    halted = scan([str(path)], tmp_path / "b", checks=dup, policy=strict)
    assert halted["verdict"] == "halt" and "policy max_quarantined_fraction is 20.0%" in halted["halt_reasons"][0]
    lenient = GatePolicy(ignore_reasons=("exact_duplicate",))
    passed = scan([str(path)], tmp_path / "c", checks=dup, policy=lenient)
    assert (passed["verdict"], passed["accepted"], passed["reported_only"]) == ("pass", 130, {"exact_duplicate": 30})


def test_rejected_fraction_halts(tmp_path: Path, superni_slice: list[dict[str, Any]]) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", superni_slice[:20])
    with open(path, "a", encoding="utf-8") as f:
        f.write("{broken\n{broken\n")
    summary = scan([str(path)], tmp_path / "out", checks=[])
    assert summary["verdict"] == "halt" and summary["rejected"] == 2
    assert "could not be parsed" in summary["halt_reasons"][0]


def test_policy_file_yaml_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("max_quarantined_fraction: 0.1\nignore_reasons: [exact_duplicate]\n", encoding="utf-8")
    policy = load_policy(path, max_rejected_fraction=0.5, max_quarantined_fraction=None)
    assert (policy.max_quarantined_fraction, policy.max_rejected_fraction) == (0.1, 0.5)
    assert policy.ignore_reasons == ("exact_duplicate",)
    assert not policy.quarantines("exact_duplicate") and policy.quarantines("near_duplicate")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("max_quarantined_fraction: 2\n", "between 0 and 1"),
        ("quarantine_fraction: 0.1\n", "unknown policy settings \\['quarantine_fraction'\\]"),
        ("ignore_reasons: exact_duplicate\n", "must be a list of strings"),
        ("- a\n- b\n", "must be a mapping"),
        ("key: [unclosed\n", "does not parse"),
    ],
)
def test_bad_policy_fails_at_construction(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        load_policy(path)


def test_unknown_check_and_suite_fail_before_reading(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown check 'nope'; known checks: .*exact_duplicate"):
        build_check("nope")
    with pytest.raises(ConfigError, match="unknown expectation suite 'nope'"):
        build_check("gx_suite", suite="nope")


def test_bad_suite_file_names_file_and_expectation(tmp_path: Path) -> None:
    path = tmp_path / "suite.json"
    path.write_text(json.dumps({"name": "s", "expectations": [
        {"type": "expect_column_to_exist", "kwargs": {"column": "id"}},
        {"type": "expect_column_values_to_be_awesome", "kwargs": {"column": "id"}}]}), encoding="utf-8")
    with pytest.raises(ConfigError,
                       match=r"suite.json: expectation #2 has unknown type 'expect_column_values_to_be_awesome'"):
        build_check("gx_suite", suite=str(path))
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(ConfigError, match="is not valid JSON"):
        build_check("gx_suite", suite=str(path))


def test_suite_column_missing_from_batch_is_a_named_critical_failure(tmp_path: Path,
                                                                     superni_slice: list[dict[str, Any]]) -> None:
    suite = tmp_path / "suite.json"
    suite.write_text(json.dumps({"name": "needs_lang", "expectations": [
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "language"}, "severity": "critical"}]}),
        encoding="utf-8")
    path = write_jsonl(tmp_path / "in.jsonl", superni_slice[:10])
    summary = scan([str(path)], tmp_path / "out", checks=[build_check("gx_suite", suite=str(suite))])
    assert summary["verdict"] == "halt"
    assert "language" in summary["halt_reasons"][0]


def test_missing_input_raises_before_any_output(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        scan([str(tmp_path / "missing.jsonl")], tmp_path / "out", checks=[])
    assert not (tmp_path / "out" / SUMMARY_FILE).exists()


def test_records_without_ids_get_stable_content_ids(tmp_path: Path) -> None:
    recs = [{"instruction": "Say hi", "output": "hi"}, {"instruction": "Say hi", "output": "hi"},
            {"instruction": "Say bye", "output": "bye"}]
    path = write_jsonl(tmp_path / "in.jsonl", recs)
    lenient = GatePolicy(max_quarantined_fraction=1.0)  # 1 of 3 is a duplicate: do not halt this tiny batch
    scan([str(path)], tmp_path / "a", checks=[build_check("exact_duplicate")], policy=lenient)
    scan([str(path)], tmp_path / "b", checks=[build_check("exact_duplicate")], policy=lenient)
    a = _ids(tmp_path / "a" / ACCEPTED_FILE) + _ids(tmp_path / "a" / QUARANTINE_FILE)
    assert a == _ids(tmp_path / "b" / ACCEPTED_FILE) + _ids(tmp_path / "b" / QUARANTINE_FILE)
    assert len(set(a)) == 3 and all(i.startswith("sha256:") for i in a)
    assert a[2] == a[0] + "-2"  # the duplicate gets an occurrence suffix, so ids stay unique


def test_outputs_are_one_committed_result_set(tmp_path: Path, superni_slice: list[dict[str, Any]]) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", superni_slice[:60] + superni_slice[:5])
    out = tmp_path / "out"
    summary = scan([str(path)], out, checks=[build_check("exact_duplicate")])
    files = summary["commit"]["files"]
    assert sorted(files) == [ACCEPTED_FILE, "canary.json", "manifest.json", QUARANTINE_FILE, REJECTED_FILE, REPORT_FILE]
    assert load_committed(out) == json.loads((out / SUMMARY_FILE).read_text(encoding="utf-8"))
    # an output that is not the committed one (a later run killed half-way, a hand edit) voids the set
    (out / QUARANTINE_FILE).write_bytes((out / QUARANTINE_FILE).read_bytes()[:-1] + b"x")
    with pytest.raises(TunegateError, match=r"incomplete or from an interrupted run; rerun the night "
                                            r"\(quarantine.parquet is not the file the summary committed"):
        load_committed(out)
    (out / SUMMARY_FILE).unlink()
    with pytest.raises(TunegateError, match=r"no summary\.json"):
        load_committed(out)


def test_a_rerun_cleans_the_temporary_files_a_killed_run_left(tmp_path: Path,
                                                             superni_slice: list[dict[str, Any]]) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", superni_slice[:40])
    out = tmp_path / "out"
    out.mkdir()
    (out / ".accepted.parquet.abc123.tmp").write_bytes(b"half")
    scan([str(path)], out, checks=[build_check("exact_duplicate")])
    assert not list(out.glob(".*.tmp"))


def test_a_second_run_into_the_same_directory_fails_at_once_naming_the_holder(
        tmp_path: Path, superni_slice: list[dict[str, Any]]) -> None:
    import os
    import socket

    path = write_jsonl(tmp_path / "in.jsonl", superni_slice[:40])
    out = tmp_path / "out"
    holder = rf"in use by another tunegate run \(pid {os.getpid()} on {socket.gethostname()}\)"
    with output_lock(out), pytest.raises(TunegateError, match=holder):
        scan([str(path)], out, checks=[build_check("exact_duplicate")])
    assert not (out / SUMMARY_FILE).exists()
    assert scan([str(path)], out, checks=[build_check("exact_duplicate")])["verdict"] == "pass"


def test_an_output_directory_inside_an_input_directory_is_refused(tmp_path: Path,
                                                                 superni_slice: list[dict[str, Any]]) -> None:
    data = tmp_path / "data"
    data.mkdir()
    write_jsonl(data / "in.jsonl", superni_slice[:20])
    for out in (data, data / "out"):
        with pytest.raises(ConfigError, match="is inside the input"):
            scan([str(data)], out, checks=[build_check("exact_duplicate")])
        with pytest.raises(ConfigError, match="is inside the input"):
            scan([str(data / "*.jsonl")], out, checks=[build_check("exact_duplicate")])
    assert not (data / "out").exists()


def test_a_batch_published_concurrently_is_rechecked_before_this_one_enters(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, superni_slice: list[dict[str, Any]]) -> None:
    """Two nights sharing a history: another batch lands between this batch's checks and its publish. The
    history refuses the stale batch; scan re-checks it against the new generation, so its copies of the
    other batch's records are caught instead of both being accepted."""
    from tests.conftest import write_jsonl
    from tunegate.core import pipeline
    from tunegate.core.history import open_history, update_history

    history = tmp_path / "history"
    other = tmp_path / "other"
    pipeline.scan([str(write_jsonl(tmp_path / "o.jsonl", superni_slice[:300]))], other)  # not published yet
    mine = write_jsonl(tmp_path / "m.jsonl", superni_slice[300:600] + [dict(r, id=f"copy-{r['id']}")
                                                                       for r in superni_slice[:40]])
    real_gate, calls = pipeline.gate, []

    def gate_then_someone_publishes(*args: Any, **kwargs: Any) -> dict[str, Any]:
        result = real_gate(*args, **kwargs)
        if not calls:  # the other night's publish lands right after this batch was checked
            update_history(history, other / ACCEPTED_FILE, batch_id="other")
        calls.append(result["reasons"].get("near_duplicate", 0))
        return result

    monkeypatch.setattr(pipeline, "gate", gate_then_someone_publishes)
    summary = pipeline.scan([str(mine)], tmp_path / "mine", history_dir=str(history),
                            policy=GatePolicy(checks={"embedding_outlier": False, "poison_trigger": False,
                                                      "poison_content": False}, suites=()))
    assert calls[0] == 0 and calls[1] >= 38  # first check saw no history; the re-check found the copies
    assert summary["reasons"]["near_duplicate"] == calls[1]
    assert summary["history"]["batches"] == 2
    assert open_history(history).count == 300 + 300  # the copies were not accepted twice


def test_check_times_are_kept_beside_the_work_not_in_the_outputs(tmp_path: Path) -> None:
    from tunegate.core.checks import TIMINGS_FILE, run_checks
    from tunegate.core.ingest import ingest

    work = tmp_path / "work"
    ingest([str(NIGHTLY)], work)
    run_checks(str(work), [build_check("exact_duplicate"), build_check("record_size")])
    run_checks(str(work), [build_check("exact_duplicate")])  # a second call (a recheck) merges
    times = json.loads((work / TIMINGS_FILE).read_text(encoding="utf-8"))
    assert set(times) == {"exact_duplicate", "record_size"}
    assert all(isinstance(c["seconds"], float) and c["seconds"] >= 0 for c in times.values())
    assert all(c["peak_rss_mb"] is None or c["peak_rss_mb"] > 0 for c in times.values())
    summary = json.loads((work / "findings" / "exact_duplicate.json").read_text(encoding="utf-8"))
    assert "wall_seconds" not in json.dumps(summary) and TIMINGS_FILE not in json.dumps(summary)
