"""`tunegate scan --history`: yesterday's accepted records are today's near-duplicates; a halted batch adds nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import write_jsonl
from tunegate.cli import main


def _summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text(encoding="utf-8"))


def test_history_carries_accepted_records_across_nights(tmp_path: Path, superni_slice: list[dict]) -> None:
    history = tmp_path / "history"
    night1 = write_jsonl(tmp_path / "night1.jsonl", superni_slice[:200])
    assert main(["scan", str(night1), "--out", str(tmp_path / "n1"), "--no-suite", "--check", "near_duplicate",
                 "--history", str(history), "-q"]) == 0
    first = _summary(tmp_path / "n1")
    assert first["accepted"] == 200 and first["history"]["added"] == 200
    # night 2: 30 of yesterday's records (re-sent with new ids) and 200 new ones
    resent = [dict(r, id=f"resent-{i}") for i, r in enumerate(superni_slice[:30])]
    night2 = write_jsonl(tmp_path / "night2.jsonl", resent + superni_slice[1000:1200])
    assert main(["scan", str(night2), "--out", str(tmp_path / "n2"), "--no-suite", "--check", "near_duplicate",
                 "--history", str(history), "-q"]) == 0
    second = _summary(tmp_path / "n2")
    assert second["reasons"].get("near_duplicate") == 30
    assert second["history"]["added"] == 200


def test_halted_batch_is_not_added_to_history(tmp_path: Path, superni_slice: list[dict]) -> None:
    history = tmp_path / "history"
    batch = write_jsonl(tmp_path / "b.jsonl", superni_slice[:40] + superni_slice[:40])
    rc = main(["scan", str(batch), "--out", str(tmp_path / "o"), "--no-suite", "--check", "exact_duplicate",
               "--check", "near_duplicate", "--history", str(history), "-q"])
    assert rc == 1 and "history" not in _summary(tmp_path / "o")
    assert not (history / "manifest.json").exists()


def test_history_subcommands_show_update_and_replace(tmp_path: Path, superni_slice: list[dict],
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    history = tmp_path / "history"
    night = write_jsonl(tmp_path / "night.jsonl", superni_slice[:120])
    assert main(["scan", str(night), "--out", str(tmp_path / "n1"), "--no-suite", "--check", "near_duplicate",
                 "-q"]) == 0
    capsys.readouterr()
    assert main(["history", "update", str(history), str(tmp_path / "n1" / "accepted.parquet"), "-q"]) == 0
    added = json.loads(capsys.readouterr().out)
    assert (added["added"], added["replaced"], added["history_records"]) == (120, 0, 120)
    assert main(["history", "show", str(history)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["batch_ids"] == ["n1"] and shown["history_records"] == 120
    # the same night rerun on a smaller input: its contribution is replaced, not added
    write_jsonl(night, superni_slice[:100])
    assert main(["scan", str(night), "--out", str(tmp_path / "n1"), "--no-suite", "--check", "near_duplicate",
                 "--history", str(history), "-q"]) == 0
    rerun = _summary(tmp_path / "n1")
    assert rerun["reasons"] == {}  # compared against the history without its own earlier records
    assert (rerun["history"]["replaced"], rerun["history"]["added"], rerun["history"]["history_records"]) == (
        120, 100, 100)


def test_an_unusable_history_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    history = tmp_path / "history"
    history.mkdir()
    (history / "manifest.json").write_text("{not json", encoding="utf-8")
    assert main(["history", "show", str(history)]) == 2
    err = capsys.readouterr().err
    assert "manifest.json is unreadable" in err and "tunegate history rebuild" in err
