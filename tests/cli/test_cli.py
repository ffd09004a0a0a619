"""The CLI contract of issue 2: files, exit codes, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.conftest import FORMATS, NIGHTLY, write_jsonl
from tunegate.cli import main

TUNEGATE = [sys.executable, "-m", "tunegate.cli"]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run([*TUNEGATE, *args], capture_output=True, text=True, env=env, timeout=300,
                          check=False)


def test_scan_writes_the_five_outputs_and_exits_0_on_quarantine(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["scan", str(NIGHTLY), "--out", str(tmp_path), "-q"])
    assert rc == 0
    for name in ("accepted.parquet", "quarantine.parquet", "rejected.jsonl", "summary.json", "report.html"):
        assert (tmp_path / name).is_file(), name
    assert not (tmp_path / "work").exists()  # staging is removed unless --keep-work
    summary = json.loads((tmp_path / "summary.json").read_text(encoding="utf-8"))
    assert {"total", "accepted", "quarantined", "rejected", "verdict", "checks", "inputs"} <= set(summary)
    assert summary["verdict"] == "quarantine"
    quarantine = pq.read_schema(tmp_path / "quarantine.parquet")
    assert {"reasons", "findings", "id", "instruction", "output", "source_file", "source_line"} <= set(quarantine.names)
    out = capsys.readouterr().out
    assert "verdict QUARANTINE" in out and str(tmp_path / "accepted.parquet") in out


def test_scan_pass_exits_0_and_halt_exits_1(tmp_path: Path, superni_slice: list[dict]) -> None:
    clean = write_jsonl(tmp_path / "clean.jsonl", superni_slice[:50])
    assert main(["scan", str(clean), "--out", str(tmp_path / "a"), "--no-suite", "-q"]) == 0
    summary = json.loads((tmp_path / "a" / "summary.json").read_text(encoding="utf-8"))
    assert summary["verdict"] == "pass" and summary["accepted"] == 50
    dup = write_jsonl(tmp_path / "dup.jsonl", superni_slice[:50] + superni_slice[:20])
    rc = main(["scan", str(dup), "--out", str(tmp_path / "b"), "--no-suite", "--max-quarantined-fraction", "0.1", "-q"])
    assert rc == 1
    assert json.loads((tmp_path / "b" / "summary.json").read_text(encoding="utf-8"))["verdict"] == "halt"


def test_format_flag_and_multiple_inputs(tmp_path: Path) -> None:
    rc = main(["scan", str(FORMATS / "alpaca.json"), str(FORMATS / "alpaca.parquet"), "--format", "alpaca",
               "--out", str(tmp_path), "--no-suite", "--max-quarantined-fraction", "0.5", "-q"])
    assert rc == 0
    summary = json.loads((tmp_path / "summary.json").read_text(encoding="utf-8"))
    # the same 20 records twice: the second file's copies are exact duplicates
    assert (summary["total"], summary["accepted"], summary["quarantined"]) == (40, 20, 20)
    assert [i["records"] for i in summary["inputs"]] == [20, 20]


def test_policy_file_flag(tmp_path: Path, superni_slice: list[dict]) -> None:
    dup = write_jsonl(tmp_path / "dup.jsonl", superni_slice[:10] + superni_slice[:1])
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"quarantine_reasons": ["trigger_phrase"]}), encoding="utf-8")
    assert main(["scan", str(dup), "--out", str(tmp_path / "o"), "--no-suite", "--policy", str(policy), "-q"]) == 0
    summary = json.loads((tmp_path / "o" / "summary.json").read_text(encoding="utf-8"))
    # the copy is found by both duplicate checks, reported, and kept: the policy quarantines another reason
    assert summary["accepted"] == 11 and summary["reported_only"] == {"exact_duplicate": 1, "near_duplicate": 1}


def test_check_flags_turn_checks_off_and_set_options(tmp_path: Path, superni_slice: list[dict]) -> None:
    batch = write_jsonl(tmp_path / "b.jsonl", superni_slice[:60])
    assert main(["scan", str(batch), "--out", str(tmp_path / "o"), "--no-suite", "--skip-check", "poison_trigger",
                 "--skip-check", "poison_content", "--option", "near_duplicate.threshold=0.99",
                 "--option", "embedding_outlier.z=5", "-q"]) == 0
    summary = json.loads((tmp_path / "o" / "summary.json").read_text(encoding="utf-8"))
    assert summary["check_status"]["poison_trigger"]["status"] == "disabled"
    assert summary["checks"]["near_duplicate"]["metrics"]["threshold"] == 0.99
    assert summary["policy"]["checks"]["embedding_outlier"] == {"z": 5}
    assert list(summary["checks"]) == ["contributor_policy", "embedding_outlier", "exact_duplicate", "near_duplicate",
                                       "record_size", "source_diversity"]


@pytest.mark.parametrize(("flags", "message"), [
    (["--option", "near_duplicate.treshold=0.9"], "checks.near_duplicate: unknown option 'treshold'"),
    (["--option", "near_duplicate=0.9"], "expected CHECK.KEY=VALUE"),
    (["--skip-check", "near_dupe"], "unknown check(s) ['near_dupe']"),
    (["--check", "exact_duplicate", "--check", "bogus"], "unknown check(s) ['bogus']"),
])
def test_bad_check_flags_are_exit_2_naming_the_key(tmp_path: Path, flags: list[str], message: str) -> None:
    batch = write_jsonl(tmp_path / "b.jsonl", [{"instruction": "x", "input": "", "output": "y"}])
    proc = _run("scan", str(batch), "--out", str(tmp_path / "o"), "--no-suite", "-q", *flags)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["scan", "{tmp}/missing.jsonl", "--out", "{tmp}/o"], "missing.jsonl: no such file"),
        (["scan", "{tmp}/unknown.txt", "--out", "{tmp}/o"], "unknown.txt: unknown format"),
        (["scan", "{tmp}/empty.jsonl", "--out", "{tmp}/o"], "empty.jsonl: file is empty"),
        (["scan", "{tmp}/empty.jsonl", "--out", "{tmp}/o", "--policy", "{tmp}/nope.yaml"], "cannot read policy file"),
    ],
)
def test_bad_input_is_one_line_exit_2_without_traceback(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "unknown.txt").write_text("hello", encoding="utf-8")
    (tmp_path / "empty.jsonl").write_text("", encoding="utf-8")
    proc = _run(*[a.format(tmp=tmp_path) for a in args], "--no-suite", "-q")
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("tunegate: error:")]
    assert len(errors) == 1 and message in errors[0]


def test_usage_error_exits_2() -> None:
    proc = _run("scan", "--format", "yaml", "x")
    assert proc.returncode == 2 and "invalid choice" in proc.stderr


def test_summary_subcommand(tmp_path: Path, capsys: pytest.CaptureFixture[str], superni_slice: list[dict]) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", superni_slice[:5])
    main(["scan", str(path), "--out", str(tmp_path / "o"), "--no-suite", "-q"])
    capsys.readouterr()
    assert main(["summary", str(tmp_path / "o")]) == 0
    assert "verdict PASS: 5 records, 5 accepted" in capsys.readouterr().out
    assert main(["summary", str(tmp_path / "missing")]) == 2


def test_column_map_from_flags_and_from_the_policy(tmp_path: Path, superni_slice: list[dict]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"prompt": r["instruction"] + "\n" + r["input"], "completion": r["output"], "id": r["id"]}
            for r in superni_slice[:30]]
    src = tmp_path / "pc.parquet"
    pq.write_table(pa.Table.from_pylist(rows), src)
    assert main(["scan", str(src), "--out", str(tmp_path / "a"), "--no-suite", "--check", "exact_duplicate",
                 "--column", "prompt=instruction", "--column", "completion=output", "-q"]) == 0
    policy = tmp_path / "policy.yaml"
    policy.write_text("input:\n  columns: {prompt: instruction, completion: output}\nchecks: [exact_duplicate]\n"
                      "suites: []\n", encoding="utf-8")
    assert main(["scan", str(src), "--out", str(tmp_path / "b"), "--policy", str(policy), "-q"]) == 0
    for out in ("a", "b"):
        s = json.loads((tmp_path / out / "summary.json").read_text(encoding="utf-8"))
        assert (s["accepted"], s["rejected"]) == (30, 0)
        assert s["policy"]["input"]["columns"] == {"prompt": "instruction", "completion": "output"}
    accepted = pq.read_table(tmp_path / "b" / "accepted.parquet").to_pylist()
    assert accepted[0]["output"] == superni_slice[0]["output"]


def test_summary_refuses_an_incomplete_or_interrupted_result_set(tmp_path: Path, superni_slice: list[dict],
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", superni_slice[:30])
    out = tmp_path / "o"
    assert main(["scan", str(path), "--out", str(out), "--no-suite", "-q"]) == 0
    # a later run killed after replacing accepted.parquet but before the marker: the old summary must not vouch
    (out / "accepted.parquet").write_bytes(b"PAR1 not the committed batch")
    capsys.readouterr()
    assert main(["summary", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"outputs of {out} are incomplete or from an interrupted run; rerun the night" in err
    assert "accepted.parquet is not the file the summary committed" in err
    (out / "summary.json").unlink()
    assert main(["summary", str(out)]) == 2
    assert "(no summary.json)" in capsys.readouterr().err


def test_halt_writes_no_accepted_file_and_summary_says_where_the_records_are(
        tmp_path: Path, superni_slice: list[dict], capsys: pytest.CaptureFixture[str]) -> None:
    dup = write_jsonl(tmp_path / "dup.jsonl", superni_slice[:50] + superni_slice[:20])
    out = tmp_path / "b"
    assert main(["scan", str(dup), "--out", str(out), "--no-suite", "--max-quarantined-fraction", "0.1", "-q"]) == 1
    assert not (out / "accepted.parquet").exists()
    assert pq.read_metadata(out / "held.parquet").num_rows == 50
    capsys.readouterr()
    assert main(["summary", str(out)]) == 1
    printed = capsys.readouterr().out
    assert "70 records, 0 accepted, 50 held (not published), 20 quarantined" in printed
    assert f"held: {out / 'held.parquet'}" in printed and "accepted:" not in printed


def test_a_second_scan_into_a_busy_directory_and_an_output_inside_the_input_exit_2(
        tmp_path: Path, superni_slice: list[dict], capsys: pytest.CaptureFixture[str]) -> None:
    from tunegate.core.gate import output_lock

    data = tmp_path / "data"
    data.mkdir()
    write_jsonl(data / "in.jsonl", superni_slice[:10])
    out = tmp_path / "o"
    with output_lock(out):
        assert main(["scan", str(data), "--out", str(out), "--no-suite", "-q"]) == 2
    err = capsys.readouterr().err
    assert f"tunegate: error: {out} is in use by another tunegate run (pid {os.getpid()} on" in err
    assert main(["scan", str(data), "--out", str(data / "out"), "--no-suite", "-q"]) == 2
    assert "is inside the input" in capsys.readouterr().err


def test_an_output_path_that_is_a_file_is_a_clear_exit_2(tmp_path: Path, superni_slice: list[dict]) -> None:
    batch = write_jsonl(tmp_path / "b.jsonl", superni_slice[:20])
    (tmp_path / "taken").write_text("not a directory", encoding="utf-8")
    proc = _run("scan", str(batch), "--out", str(tmp_path / "taken"), "--no-suite", "-q")
    assert proc.returncode == 2, proc.stderr
    assert "cannot write" in proc.stderr and "a file is in the way" in proc.stderr
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr
