"""`tunegate scan --history`: yesterday's accepted records are today's near-duplicates; a halted batch adds nothing."""

from __future__ import annotations

import json
from pathlib import Path

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
