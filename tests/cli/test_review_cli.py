"""`tunegate review list|show|release|confirm`: the table, the whole record, decisions, and exit 2 with one line
(never a traceback) for what a person gets wrong."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.core.test_review import scan_small, small_records
from tunegate.cli import main
from tunegate.core.policy import GatePolicy

ESCAPES = "\x1b[2J\x1b[31mred\u202eevil"  # clears a terminal, colours it, reverses the text after it


@pytest.fixture
def night(tmp_path: Path) -> Path:
    records = small_records()
    longest = max(records, key=lambda r: len(r["input"]))
    longest["output"] = longest["output"] + ESCAPES
    out = tmp_path / "2026-01-02"
    scan_small(records, out)
    return out


def review(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    rc = main(["review", *args])
    out, err = capsys.readouterr()
    return rc, out, err


def _ids(out: str) -> list[str]:
    return [line.split()[0] for line in out.splitlines()[2:]]


def test_list_is_a_table_with_filters(night: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = review(capsys, "list", str(night))
    lines = out.splitlines()
    assert rc == 0 and lines[0].startswith(f"{night}: verdict quarantine, ")
    assert lines[1].split() == ["ID", "TASK", "REASONS", "SCORE", "STATUS"]
    assert all(line.split()[2::2] == ["oversized_field", "pending"] for line in lines[2:])
    ids = _ids(out)
    assert review(capsys, "release", str(night), "--id", ids[0], "--by", "alice", "--why", "benign", "-q")[0] == 0
    rc, out, _ = review(capsys, "list", str(night), "--status", "released")
    assert rc == 0 and _ids(out) == [ids[0]]
    rc, out, _ = review(capsys, "list", str(night), "--reason", "trigger_phrase")
    assert rc == 0 and _ids(out) == []
    rc, out, _ = review(capsys, "list", str(night), "--json")
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["id"] for r in rows] == ids and rows[0]["status"] == "released"


def test_show_prints_the_whole_record_with_its_evidence_and_escapes_the_terminal(
        night: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tunegate.core.review import Review

    (target,) = [i.id for i in Review.open(night).list() if "red" in Review.open(night).show(i.id)[0]["output"]]
    rc, out, _ = review(capsys, "show", str(night), target)
    assert rc == 0 and out.startswith(f"record {target}  status: pending  reasons: oversized_field")
    for part in ("  instruction:", "  input:", "  output:", "  evidence:", "record_size / oversized_field",
                 '"field": "input"', "decisions: none (pending)"):
        assert part in out, part
    assert "\x1b" not in out and "\u202e" not in out
    assert "\\u001b[2J\\u001b[31mred\\u202eevil" in out
    rc, out, _ = review(capsys, "show", str(night), target, "--json")
    (record,) = json.loads(out)
    assert rc == 0 and record["output"].endswith(ESCAPES)  # JSON keeps the text exact (escaped by JSON itself)


def test_release_and_confirm(night: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = review(capsys, "list", str(night))
    ids = _ids(out)
    rc, out, _ = review(capsys, "release", str(night), "--id", ids[0], "--id", ids[1], "--by", "alice",
                        "--why", "benign", "-q")
    assert rc == 0 and out.startswith(f"2 record(s) released in {night}")
    assert f"released file: {night}/released/0001-" in out
    rc, out, _ = review(capsys, "release", str(night), "--id", ids[0], "--by", "bob", "--why", "again", "-q")
    assert rc == 0 and out.startswith("nothing to release")
    assert f"skipped {ids[0]}: already released by alice at " in out and "in released/0001-" in out
    rc, out, _ = review(capsys, "confirm", str(night), "--id", ids[2], "--by", "alice", "--why", "planted", "-q",
                        "--json")
    result: dict[str, Any] = json.loads(out)
    assert rc == 0 and result["count"] == 1 and result["records"][0]["id"] == ids[2]
    assert any("no history" in n for n in result["notes"])
    entries = [json.loads(line) for line in (night / "audit.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [(e["action"], e["by"]) for e in entries] == [("release", "alice"), ("confirm", "alice")]
    with open(night / "audit.jsonl", "ab") as f:  # a decision killed half-way through its line
        f.write(b'{"action": "release", "by": "kil')
    rc, out, err = review(capsys, "list", str(night), "--json")
    assert rc == 0 and f"tunegate: warning: {night}/audit.jsonl:3: cut short" in err
    assert len([json.loads(line) for line in out.splitlines()]) == len(ids)  # stdout stays parseable


def test_mistakes_exit_2_with_one_line(night: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = review(capsys, "list", str(night))
    first = _ids(out)[0]
    for args, message in [
        (["show", str(night), "nope"], "no quarantined record with id 'nope'"),
        (["release", str(night), "--id", "nope", "--by", "a", "--why", "b"], "no quarantined record with id 'nope'"),
        (["list", str(tmp_path / "missing")], "no such directory"),
        (["confirm", str(night), "--phrase", "ada lovelace", "--by", "a", "--why", "b"],
         "no quarantined record matches phrase 'ada lovelace'"),
        (["release", str(night), "--id", first, "--by", " ", "--why", "b"], "needs who (--by) and why (--why)"),
    ]:
        rc, _, err = review(capsys, *args, "-q")
        assert rc == 2 and err.startswith("tunegate: error: ") and message in err and "Traceback" not in err, args
    assert review(capsys, "confirm", str(night), "--id", first, "--by", "a", "--why", "b", "-q")[0] == 0
    rc, _, err = review(capsys, "release", str(night), "--id", first, "--by", "a", "--why", "b", "-q")
    assert rc == 2 and "were confirmed as poison" in err and "pass --override" in err
    (night / "summary.json").unlink()
    rc, _, err = review(capsys, "list", str(night))
    assert rc == 2 and "incomplete or from an interrupted run" in err
    for args in (["release", str(night), "--by", "a", "--why", "b"],  # no selector
                 ["release", str(night), "--id", first, "--reason", "x", "--by", "a", "--why", "b"],  # two
                 ["confirm", str(night), "--id", first]):  # no --by/--why
        with pytest.raises(SystemExit) as exc:
            main(["review", *args])
        assert exc.value.code == 2


def test_a_halted_night_is_not_released(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "halted"
    assert scan_small(small_records(), out, policy=GatePolicy(max_quarantined_fraction=0.01))["verdict"] == "halt"
    rc, listed, _ = review(capsys, "list", str(out))
    assert rc == 0 and "verdict halt" in listed
    rc, _, err = review(capsys, "release", str(out), "--reason", "oversized_field", "--by", "a", "--why", "b", "-q")
    assert rc == 2 and "the night halted" in err and not (out / "released").exists()
