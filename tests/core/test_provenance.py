"""The night manifest: written and committed with the result set, traces a record to its input line and the checks
it passed, verifies the files (tamper evidence), and a rerun writes it again, the same."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from tests.conftest import NIGHTLY, write_jsonl
from tunegate.core.checks import build_check
from tunegate.core.gate import (
    ACCEPTED_FILE,
    HELD_FILE,
    MANIFEST_FILE,
    QUARANTINE_FILE,
    REPORTED_FILE,
    SUMMARY_FILE,
    gate,
    load_committed,
    output_lock,
)
from tunegate.core.pipeline import WORK_DIR, scan
from tunegate.core.policy import GatePolicy
from tunegate.core.provenance import DIGEST_METHOD, policy_sha256, trace, verify
from tunegate.core.schema import content_sha256
from tunegate.exceptions import TunegateError

SUITE = Path(__file__).resolve().parents[2] / "expectations" / "instruction_record.json"


def _checks(gx_check: Any) -> list[Any]:
    return [build_check("record_size"), build_check("exact_duplicate"), gx_check]


@pytest.fixture(scope="module")
def night(tmp_path_factory: pytest.TempPathFactory, gx_check: Any) -> Path:
    out = tmp_path_factory.mktemp("night")
    scan([str(NIGHTLY)], out, checks=_checks(gx_check))
    return out


def _manifest(out: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((out / MANIFEST_FILE).read_text(encoding="utf-8"))
    return data


def _input_line(path: Path, line: int) -> dict[str, Any]:
    """The record at 1-based ``line`` of a JSONL input, as the file holds it."""
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            if number == line:
                record: dict[str, Any] = json.loads(raw)
                return record
    raise AssertionError(f"{path} has no line {line}")


def test_the_manifest_is_written_and_committed_with_the_result_set(night: Path) -> None:
    summary = load_committed(night)  # every output, the manifest included, matches its committed sha256
    entry = summary["commit"]["files"][MANIFEST_FILE]
    assert entry["sha256"] == hashlib.sha256((night / MANIFEST_FILE).read_bytes()).hexdigest()
    assert summary["outputs"]["manifest"] == MANIFEST_FILE
    m = _manifest(night)
    assert m["format"] == 1 and m["tunegate_version"] == summary["tunegate_version"]
    assert m["verdict"] == summary["verdict"] == "quarantine"
    assert m["policy"] == {"sha256": policy_sha256(GatePolicy()), "file": None}
    assert m["inputs"] == [{"path": str(NIGHTLY), "sha256": hashlib.sha256(NIGHTLY.read_bytes()).hexdigest(),
                            "bytes": NIGHTLY.stat().st_size, "records": 1010, "rejected": 4}]
    meta = json.loads(SUITE.read_text(encoding="utf-8"))["meta"]
    assert m["suites"] == [{"name": "instruction_record", "check": "gx_instruction_record", "path": str(SUITE),
                            "sha256": hashlib.sha256(SUITE.read_bytes()).hexdigest(),
                            "version": meta.get("version") or meta.get("tunegate_version")}]
    checks = {c["name"]: c for c in m["checks"]}
    assert list(checks) == ["record_size", "exact_duplicate", "gx_instruction_record"]  # run order, only those run
    assert checks["record_size"]["config"] == {"max_field_chars": 200_000}
    assert checks["exact_duplicate"] == {"name": "exact_duplicate", "status": "ok", "config": {},
                                         "flagged_records": 6, "reasons": {"exact_duplicate": 6}}
    assert checks["gx_instruction_record"]["config"] == {"suite": "instruction_record"}
    assert m["embedding"] == []  # no vector check ran
    # every output but the summary (which commits the manifest) with its sha256, size and rows
    assert sorted(m["outputs"]) == ["accepted", "canary", "quarantine", "rejected", "report"]  # canary: on by default
    for key, out in m["outputs"].items():
        assert out["sha256"] == summary["commit"]["files"][out["path"]]["sha256"], key
    assert m["outputs"]["accepted"]["rows"] == summary["accepted"]
    assert m["outputs"]["quarantine"]["rows"] == summary["quarantined"]
    assert m["outputs"]["rejected"]["rows"] == summary["rejected"] == 4
    # the batch digest, recomputed here the way a trainer would, from the records it received
    hashes = sorted(pq.read_table(night / ACCEPTED_FILE, columns=["content_sha256"]).column(0).to_pylist())
    expected = hashlib.sha256("".join(f"{h}\n" for h in hashes).encode()).hexdigest()
    assert m["batch_digest"] == {"output": "accepted", "records": summary["accepted"], "sha256": expected,
                                 "method": DIGEST_METHOD}
    assert str(night) not in (night / MANIFEST_FILE).read_text(encoding="utf-8")  # where it ran is not in it


def test_trace_of_an_accepted_record_gives_its_real_source_line(night: Path) -> None:
    accepted = pq.read_table(night / ACCEPTED_FILE).to_pylist()
    record = next(r for r in accepted if r["source_line"] > 500)  # far from the top: a real line number
    result = trace(night, record["id"])
    (traced,) = result["records"]
    assert traced["output"] == "accepted" and traced["content_sha256"] == record["content_sha256"]
    assert traced["source"] == {"file": str(NIGHTLY), "line": record["source_line"],
                                "file_sha256": hashlib.sha256(NIGHTLY.read_bytes()).hexdigest()}
    raw = _input_line(NIGHTLY, traced["source"]["line"])  # the line of the input file itself
    assert raw["id"] == record["id"]
    assert content_sha256(raw["instruction"], raw.get("input", ""), raw["output"], None) == record["content_sha256"]
    assert traced["checks_passed"] == ["record_size", "exact_duplicate", "gx_instruction_record"]
    assert traced["findings"] == [] and traced["decisions"] == []
    assert result["versions"]["suites"][0]["name"] == "instruction_record"
    assert result["batch_digest"] == _manifest(night)["batch_digest"]
    # the content hash finds it too
    assert [r["id"] for r in trace(night, record["content_sha256"])["records"]] == [record["id"]]


def test_trace_of_a_quarantined_record_gives_its_reasons(night: Path) -> None:
    (traced,) = trace(night, "planted-empty-0")["records"]
    (row,) = [r for r in pq.read_table(night / QUARANTINE_FILE).to_pylist() if r["id"] == "planted-empty-0"]
    assert traced["output"] == "quarantined" and traced["reasons"] == row["reasons"]
    assert traced["reasons"] and all(r.startswith("gx_") for r in traced["reasons"])  # the suite's empty-output rule
    assert {f["check"] for f in traced["findings"]} == {"gx_instruction_record"}
    assert traced["checks_passed"] == ["record_size", "exact_duplicate"]  # not the suite that flagged it
    assert _input_line(NIGHTLY, traced["source"]["line"])["id"] == "planted-empty-0"
    # an exact copy: the first occurrence accepted, the copy quarantined; both traced by the shared content hash
    dup = next(r for r in pq.read_table(night / QUARANTINE_FILE).to_pylist() if r["reasons"] == ["exact_duplicate"])
    both = trace(night, dup["content_sha256"])["records"]
    assert [r["output"] for r in both] == ["accepted", "quarantined"]
    assert both[1]["reasons"] == ["exact_duplicate"] and "exact_duplicate" not in both[1]["checks_passed"]
    assert both[0]["source"]["line"] < both[1]["source"]["line"]


def test_trace_of_a_rejected_line_and_of_an_unknown_id(night: Path) -> None:
    (traced,) = trace(night, "planted-wrong-type")["records"]
    assert traced["output"] == "rejected" and traced["checks_passed"] == []
    assert traced["error"] == "field 'output' must be a string, got list"
    assert _input_line(NIGHTLY, traced["source"]["line"])["id"] == "planted-wrong-type"
    with pytest.raises(TunegateError, match=r"no record with id or content_sha256 'no-such-record'"):
        trace(night, "no-such-record")


def test_trace_shows_a_later_release_and_verify_checks_the_released_file(tmp_path: Path, night: Path) -> None:
    from tunegate.core.review import Review, Selector

    copy = tmp_path / "night"
    shutil.copytree(night, copy)
    Review.open(copy).release(Selector(ids=("planted-empty-0",)), by="alice", why="an empty answer is right here")
    (traced,) = trace(copy, "planted-empty-0")["records"]
    (decision,) = traced["decisions"]
    assert decision["action"] == "release" and decision["by"] == "alice"
    assert decision["released_file"].startswith("released/0001-") and decision["audit_line"] == 1
    assert verify(copy).ok
    released = copy / decision["released_file"]
    released.write_bytes(released.read_bytes() + b"\0")
    problems = verify(copy).problems
    assert len(problems) == 1 and problems[0].startswith(f"{decision['released_file']}: sha256 ")
    assert "audit.jsonl line 1" in problems[0]


def test_verify_passes_then_fails_after_one_flipped_byte(tmp_path: Path, night: Path) -> None:
    copy = tmp_path / "night"
    shutil.copytree(night, copy)
    result = verify(copy, sources=True)
    assert result.ok, result.problems
    assert any(c.startswith("batch digest of accepted.parquet") for c in result.checked)
    assert any(c.startswith(f"input {NIGHTLY}") for c in result.checked)
    target = copy / ACCEPTED_FILE
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    result = verify(copy)
    assert not result.ok
    assert any(p.startswith("accepted.parquet: sha256 ") and "summary.json commit" in p for p in result.problems)
    assert any(p.startswith("accepted.parquet: sha256 ") and "manifest.json output accepted" in p
               for p in result.problems)
    with pytest.raises(TunegateError, match=r"accepted.parquet is not the file the summary committed"):
        load_committed(copy)


def test_verify_catches_an_edited_manifest_and_a_missing_summary(tmp_path: Path, night: Path) -> None:
    copy = tmp_path / "night"
    shutil.copytree(night, copy)
    m = _manifest(copy)
    m["batch_digest"]["sha256"] = "0" * 64  # someone claims another set of records was accepted
    (copy / MANIFEST_FILE).write_text(json.dumps(m, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    problems = verify(copy).problems
    assert any(p.startswith("manifest.json: sha256 ") for p in problems)
    assert any(p.startswith("batch digest of accepted.parquet: ") for p in problems)
    (copy / SUMMARY_FILE).unlink()
    assert "summary.json is missing or unreadable: the result set is not committed" in verify(copy).problems
    (copy / MANIFEST_FILE).unlink()
    with pytest.raises(TunegateError, match="no result set to verify"):
        verify(copy)
    with pytest.raises(TunegateError, match="no such directory"):
        verify(tmp_path / "missing")


def test_a_rerun_rewrites_the_manifest_consistently(tmp_path: Path, night: Path, gx_check: Any) -> None:
    for _ in range(2):  # the second run replaces the first in place
        scan([str(NIGHTLY)], tmp_path, checks=_checks(gx_check))
    assert (tmp_path / MANIFEST_FILE).read_bytes() == (night / MANIFEST_FILE).read_bytes()
    assert verify(tmp_path).ok
    # a rerun with other checks: a new manifest, committed again, naming only what ran this time
    summary = scan([str(NIGHTLY)], tmp_path, checks=[build_check("exact_duplicate")])
    m = _manifest(tmp_path)
    assert [c["name"] for c in m["checks"]] == ["exact_duplicate"] and m["suites"] == []
    assert summary["commit"]["files"][MANIFEST_FILE]["sha256"] == hashlib.sha256(
        (tmp_path / MANIFEST_FILE).read_bytes()).hexdigest()
    assert verify(tmp_path).ok and not list(tmp_path.glob(".*.tmp"))


def test_a_finding_the_policy_only_reports_is_kept_for_the_trace(tmp_path: Path, night: Path) -> None:
    """ignore_reasons lets duplicates through; the passing copy's finding goes to reported.parquet, so the trace
    never says it passed exact_duplicate."""
    policy = GatePolicy(ignore_reasons=("exact_duplicate",))
    summary = scan([str(NIGHTLY)], tmp_path, policy=policy, checks=[build_check("exact_duplicate")])
    assert summary["quarantined"] == 0 and summary["reported_only"] == {"exact_duplicate": 6}
    assert summary["outputs"]["reported"] == REPORTED_FILE and REPORTED_FILE in summary["commit"]["files"]
    assert pq.ParquetFile(tmp_path / REPORTED_FILE).metadata.num_rows == 6
    assert _manifest(tmp_path)["outputs"]["reported"]["rows"] == 6
    dup = next(r for r in pq.read_table(night / QUARANTINE_FILE).to_pylist() if r["reasons"] == ["exact_duplicate"])
    first, copy = trace(tmp_path, dup["content_sha256"])["records"]
    assert (first["output"], copy["output"]) == ("accepted", "accepted")
    assert first["checks_passed"] == ["exact_duplicate"] and first["findings"] == []
    assert copy["checks_passed"] == [] and [f["reason"] for f in copy["findings"]] == ["exact_duplicate"]
    assert verify(tmp_path).ok
    scan([str(NIGHTLY)], tmp_path, checks=[build_check("exact_duplicate")])  # a rerun without it removes it
    assert not (tmp_path / REPORTED_FILE).exists() and verify(tmp_path).ok


def test_a_halted_night_digests_the_held_records_and_records_the_policy_file(
        tmp_path: Path, superni_slice: list[dict[str, Any]]) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", superni_slice[:50])
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text("min_accepted: 1000\n", encoding="utf-8")
    policy = GatePolicy.from_file(policy_file)
    out = tmp_path / "out"
    scan([str(path)], out, policy=policy, checks=[build_check("exact_duplicate")], keep_work=True)
    m = _manifest(out)
    assert m["verdict"] == "halt" and m["batch_digest"]["output"] == "held" and m["batch_digest"]["records"] == 50
    assert m["outputs"]["held"]["path"] == HELD_FILE and m["policy"]["file"] is None
    assert trace(out, superni_slice[0]["id"])["records"][0]["output"] == "held"
    with output_lock(out):  # the gate records the file the policy was read from (the CLI and the DAG pass it)
        summary = gate(out / WORK_DIR, out, policy, policy_file=policy_file)
    assert _manifest(out)["policy"] == {"sha256": policy_sha256(policy), "file": {
        "path": str(policy_file.resolve()), "sha256": hashlib.sha256(policy_file.read_bytes()).hexdigest()}}
    assert summary["commit"]["files"][MANIFEST_FILE]["sha256"] == hashlib.sha256(
        (out / MANIFEST_FILE).read_bytes()).hexdigest()
    assert verify(out, sources=True).ok
