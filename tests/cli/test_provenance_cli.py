"""`tunegate trace` and `tunegate verify`: the record's input line and checks, tamper evidence as an exit code, and
one line (never a traceback) for a missing directory, an unknown id or a night without a manifest."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.conftest import NIGHTLY
from tunegate.cli import main
from tunegate.core.checks import build_check
from tunegate.core.gate import ACCEPTED_FILE, MANIFEST_FILE, QUARANTINE_FILE, SUMMARY_FILE
from tunegate.core.pipeline import scan


@pytest.fixture(scope="module")
def night(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("night")
    scan([str(NIGHTLY)], out, checks=[build_check("record_size"), build_check("exact_duplicate")])
    return out


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    rc = main([*args, "-q"])
    out, err = capsys.readouterr()
    return rc, out, err


def _line(path: Path, number: int) -> bytes:
    """Line ``number`` (1-based) as the file holds it (the sample has a planted invalid UTF-8 line elsewhere)."""
    return path.read_bytes().split(b"\n")[number - 1]


def test_trace_prints_the_source_line_the_output_and_the_checks(night: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    dup = next(r for r in pq.read_table(night / QUARANTINE_FILE).to_pylist() if r["reasons"] == ["exact_duplicate"])
    rc, out, err = run(capsys, "trace", str(night), dup["id"])
    assert rc == 0 and err == ""
    lines = out.splitlines()
    # the id is shared by the accepted first occurrence and its quarantined copy (the input reused it)
    assert lines[0] == f"record {dup['id']} (content_sha256 {dup['content_sha256']})"
    assert f"  source: {NIGHTLY}:{dup['source_line']} (file sha256 " in out
    assert "  output: quarantined, reasons: exact_duplicate" in lines
    assert "    finding exact_duplicate: exact_duplicate (score 1)" in lines
    assert "  checks passed: record_size" in lines  # not exact_duplicate, which flagged it
    assert lines[-1].startswith("versions: tunegate ") and " policy sha256 " in lines[-1]
    assert json.loads(_line(NIGHTLY, dup["source_line"]))["id"] == dup["id"]  # the line the trace names


def test_trace_json_of_an_accepted_record(night: Path, capsys: pytest.CaptureFixture[str]) -> None:
    record = pq.read_table(night / ACCEPTED_FILE).to_pylist()[700]
    rc, out, _ = run(capsys, "trace", str(night), record["content_sha256"], "--json")
    assert rc == 0
    result = json.loads(out)
    (traced,) = result["records"]
    assert traced["output"] == "accepted" and traced["id"] == record["id"]
    assert (traced["source"]["file"], traced["source"]["line"]) == (str(NIGHTLY), record["source_line"])
    assert json.loads(_line(NIGHTLY, record["source_line"]))["id"] == record["id"]
    assert traced["checks_passed"] == ["record_size", "exact_duplicate"]
    assert result["batch_digest"]["output"] == "accepted"


def test_verify_exits_1_naming_the_tampered_file(tmp_path: Path, night: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    copy = tmp_path / "night"
    shutil.copytree(night, copy)
    rc, out, err = run(capsys, "verify", str(copy))
    assert rc == 0 and err == "" and out.startswith(f"tunegate verify: {copy}: ")
    rc, out, _ = run(capsys, "verify", str(copy), "--json", "--sources")
    assert rc == 0 and json.loads(out)["ok"] is True
    target = copy / ACCEPTED_FILE
    data = bytearray(target.read_bytes())
    data[100] ^= 0xFF
    target.write_bytes(bytes(data))
    rc, out, err = run(capsys, "verify", str(copy))
    assert rc == 1 and out == ""
    assert f"tunegate: verify failed: {copy}: accepted.parquet: sha256 " in err
    assert "Traceback" not in err
    rc, out, _ = run(capsys, "verify", str(copy), "--json")
    assert rc == 1 and json.loads(out)["ok"] is False


@pytest.mark.parametrize("case", ["missing_dir", "unknown_id", "no_manifest", "uncommitted"])
def test_bad_input_is_one_line_never_a_traceback(tmp_path: Path, night: Path, capsys: pytest.CaptureFixture[str],
                                                 case: str) -> None:
    copy = tmp_path / "night"
    shutil.copytree(night, copy)
    key = "task669-00258"
    if case == "missing_dir":
        copy = tmp_path / "nowhere"
    elif case == "unknown_id":
        key = "no-such-record"
    elif case == "no_manifest":  # a night gated before manifests existed
        summary = json.loads((copy / SUMMARY_FILE).read_text(encoding="utf-8"))
        del summary["outputs"]["manifest"], summary["commit"]["files"][MANIFEST_FILE]
        (copy / SUMMARY_FILE).write_text(json.dumps(summary), encoding="utf-8")
        (copy / MANIFEST_FILE).unlink()
    else:
        (copy / SUMMARY_FILE).unlink()
    rc, out, err = run(capsys, "trace", str(copy), key)
    assert rc == 2 and out == ""
    assert len(err.splitlines()) == 1 and err.startswith("tunegate: error: ")
    expected = {"missing_dir": "no such directory", "no_manifest": "has no manifest.json",
                "unknown_id": "no record with id or content_sha256 'no-such-record'",
                "uncommitted": "incomplete or from an interrupted run"}[case]
    assert expected in err
    if case in ("missing_dir", "no_manifest"):
        rc, out, err = run(capsys, "verify", str(copy))
        assert rc == (2 if case == "missing_dir" else 1) and "Traceback" not in err


def test_scan_with_a_policy_file_records_it_in_the_manifest(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                                            ) -> None:
    import hashlib

    policy = tmp_path / "policy.yaml"
    policy.write_text("max_quarantined_fraction: 0.5\nchecks: [record_size, exact_duplicate]\nsuites: []\n",
                      encoding="utf-8")
    out = tmp_path / "night"
    rc, _, _ = run(capsys, "scan", str(NIGHTLY), "--out", str(out), "--policy", str(policy))
    assert rc in (0, 1)  # pass or quarantine; the manifest is what is asserted
    manifest = json.loads((out / MANIFEST_FILE).read_text(encoding="utf-8"))
    assert manifest["policy"]["file"] == {"path": str(policy.resolve()),
                                          "sha256": hashlib.sha256(policy.read_bytes()).hexdigest()}
