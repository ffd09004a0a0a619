"""Review of a quarantined night (tunegate.core.review): release and confirm never lose or duplicate a record,
through double decisions, reruns and concurrent processes; the audit log survives a torn line; confirmed poison
catches its edited copies on a later night.

Two real nights: a small one (360 SuperNI records, record_size at 500 characters quarantines the ~25 longest:
records whose content is not in accepted.parquet, so they can be released) and the poisoned batch of
test_poison (5,227 real records, "Ada Lovelace" planted as a dirty-label trigger in 60).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from tests.conftest import REPO, slice_records, write_jsonl
from tests.core.test_poison import DIRTY, clean_batch, label_poison
from tunegate.core.checks import build_check
from tunegate.core.outputs import RUNS_DIR, SUMMARY_FILE, begin_outputs
from tunegate.core.pipeline import scan
from tunegate.core.policy import GatePolicy
from tunegate.core.review import (
    AUDIT_FILE,
    RELEASED_DIR,
    Review,
    Selector,
    read_log,
    released_files,
    review_lock,
)
from tunegate.core.schema import canonical_schema
from tunegate.exceptions import ReviewError, TunegateError

MAX_CHARS = 500


def small_records() -> list[dict[str, Any]]:
    return slice_records()[::10][:400]


def scan_small(records: list[dict[str, Any]], out: Path, *, policy: GatePolicy | None = None) -> dict[str, Any]:
    batch = write_jsonl(out.parent / f"{out.name}.jsonl", records)
    checks = [build_check("exact_duplicate"), build_check("record_size", max_field_chars=MAX_CHARS)]
    return scan([str(batch)], out, checks=checks, policy=policy)


@pytest.fixture
def night(tmp_path: Path) -> Path:
    out = tmp_path / "2026-01-02"
    summary = scan_small(small_records(), out)
    assert summary["verdict"] == "quarantine" and summary["reasons"] == {"oversized_field": summary["quarantined"]}
    assert summary["quarantined"] >= 10
    return out


@pytest.fixture(scope="module")
def poisoned(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, set[str]]:
    """The poisoned batch scanned with a history (night and history are copied by the tests that change them)."""
    root = tmp_path_factory.mktemp("poisoned")
    records = clean_batch()
    planted = label_poison(records, clean=False)
    out, history = root / "2026-01-05", root / "history"
    checks = [build_check("exact_duplicate"), build_check("poison_trigger"),
              build_check("near_duplicate", history_dir=str(history), batch_id=out.name)]
    summary = scan([str(write_jsonl(root / "batch.jsonl", records))], out, checks=checks, history_dir=str(history))
    assert summary["verdict"] == "quarantine" and summary["reasons"]["trigger_phrase"] >= len(planted)
    return out, history, planted


def copy_poisoned(poisoned: tuple[Path, Path, set[str]], tmp_path: Path) -> tuple[Path, Path]:
    out, history, _ = poisoned
    return Path(shutil.copytree(out, tmp_path / out.name)), Path(shutil.copytree(history, tmp_path / "history"))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def released_rows(out: Path) -> list[dict[str, Any]]:
    return [r for f in sorted((out / RELEASED_DIR).glob("*.parquet")) for r in pq.read_table(f).to_pylist()]


# ---------------------------------------------------------------------------------------------- release


def test_release_publishes_a_follow_up_file_and_never_twice(night: Path) -> None:
    accepted_before = (night / "accepted.parquet").read_bytes()
    review = Review.open(night)
    items = review.list()
    assert {i.status for i in items} == {"pending"} and all(i.reasons == ("oversized_field",) for i in items)
    first = [i.id for i in items[:2]]

    result = review.release(Selector(ids=tuple(first)), by="alice", why="long but fine: a real essay task")
    assert result.count == 2 and [r.id for r in result.records] == first and not result.skipped
    assert result.released_file is not None and result.released_file.parent == night / RELEASED_DIR
    assert result.released_file.name.startswith("0001-") and sha256(result.released_file) == result.released_sha256
    table = pq.read_table(result.released_file)
    assert table.schema.remove_metadata() == canonical_schema()  # the accepted set's schema: a follow-up batch
    assert table.column("id").to_pylist() == first
    assert (night / "accepted.parquet").read_bytes() == accepted_before  # never edited in place

    again = Review.open(night).release(Selector(ids=tuple(first)), by="bob", why="again")
    assert again.count == 0 and again.entry is None and again.released_file is None
    assert [why.split(" by ")[0] for _, why in again.skipped] == ["already released", "already released"]
    assert "nothing to release" in again.message() and "0001-" in again.message()

    rest = Review.open(night).release(Selector(reason="oversized_field"), by="alice", why="all of them")
    assert rest.count == len(items) - 2 and len(rest.skipped) == 2
    assert rest.released_file is not None and rest.released_file.name.startswith("0002-")
    ids = [r["id"] for r in released_rows(night)]
    assert sorted(ids) == sorted(i.id for i in items) and len(ids) == len(set(ids))  # each exactly once
    assert [f["records"] for f in released_files(night)] == [2, len(items) - 2]
    assert {i.status for i in Review.open(night).list()} == {"released"}


def test_every_decision_is_one_self_contained_audit_line(night: Path) -> None:
    review = Review.open(night)
    item = review.list()[0]
    review.release(Selector(ids=(item.id,)), by="alice", why="benign")
    (entry,) = read_log(night / AUDIT_FILE).entries
    assert entry["action"] == "release" and entry["by"] == "alice" and entry["why"] == "benign"
    assert entry["at"].endswith("Z") and entry["tool"].startswith("tunegate ")
    assert entry["summary_sha256"] == sha256(night / SUMMARY_FILE) and entry["batch_id"] == night.name
    assert entry["records"] == [{"id": item.id, "content_sha256": item.content_sha256}]
    assert entry["released_file"]["sha256"] == sha256(night / entry["released_file"]["path"])
    assert entry["selector"] == {"ids": [item.id]} and entry["override"] is False
    # state is read from the log, not kept anywhere else
    assert sorted(p.name for p in night.iterdir() if p.name.startswith(("audit", "review"))) == [AUDIT_FILE]
    assert Review.open(night).list(Selector(status="released"))[0].id == item.id


def test_a_request_is_kept_in_the_audit_line_and_finds_its_decision_again(night: Path) -> None:
    """What an Airflow retry relies on: the try that failed after its commit left a line naming its request."""
    a, b = Review.open(night).list()[:2]
    key = "airflow:tunegate_review/manual__2026-01-06/review"
    first = Review.open(night).release(Selector(ids=(a.id,)), by="alice", why="benign", request=key)
    assert first.entry is not None and first.entry["request"] == key
    retried = Review.open(night).release(Selector(ids=(a.id,)), by="alice", why="benign", request=key)
    assert retried.entry is None and retried.count == 0  # nothing released twice, no second line
    found = Review.open(night).decision_of(key, "release")
    assert found is not None and found["line"] == 1 and found["released_file"] == first.entry["released_file"]
    assert Review.open(night).decision_of(key, "confirm") is None
    assert Review.open(night).decision_of("airflow:another/run/review") is None
    confirmed = Review.open(night).confirm(Selector(ids=(b.id,)), by="bob", why="planted", request="k2")
    assert confirmed.entry is not None and Review.open(night).decision_of("k2") == {**confirmed.entry, "line": 2}
    plain = Review.open(night).release(Selector(ids=(Review.open(night).list()[2].id,)), by="c", why="d")
    assert plain.entry is not None and "request" not in plain.entry  # the CLI's lines are unchanged


def test_a_torn_audit_line_is_skipped_and_costs_no_other_line(night: Path, caplog: pytest.LogCaptureFixture) -> None:
    items = Review.open(night).list()
    Review.open(night).release(Selector(ids=(items[0].id,)), by="alice", why="benign")
    log = night / AUDIT_FILE
    whole = log.read_bytes()
    line = json.dumps({"action": "release", "by": "killed", "records": [{"id": items[1].id,
                                                                        "content_sha256": items[1].content_sha256}]})
    with open(log, "ab") as f:  # a writer killed half-way through its line
        f.write(line.encode()[:40])
    review = Review.open(night)
    assert any("audit.jsonl:2: cut short" in w for w in review.warnings)
    assert [i.status for i in review.list()[:2]] == ["released", "pending"]  # the torn decision never happened
    review.release(Selector(ids=(items[1].id,)), by="bob", why="benign too")
    assert log.read_bytes().startswith(whole)  # never rewritten
    audit = read_log(log)
    assert [e["by"] for e in audit.entries] == ["alice", "bob"] and [e["line"] for e in audit.entries] == [1, 3]
    assert audit.warnings == [f"{log}:2: not a whole audit entry; skipped"]
    assert [i.status for i in Review.open(night).list()[:2]] == ["released", "released"]


def test_a_release_killed_before_its_audit_line_was_never_published(night: Path) -> None:
    review = Review.open(night)
    item = review.list()[0]
    # what a kill between the file's rename and the audit line leaves: a released file no line names
    orphan = night / RELEASED_DIR / "0001-20260102T000000000000Z.parquet"
    orphan.parent.mkdir()
    pq.write_table(review._canonical([item]), orphan)
    (orphan.parent / ".0001-x.parquet.abc.tmp").write_bytes(b"half")
    assert released_files(night) == []  # the consumer's view: not published
    result = review.release(Selector(ids=(item.id,)), by="alice", why="benign")
    assert result.count == 1
    assert sorted(p.name for p in orphan.parent.iterdir()) == [result.released_file.name]  # type: ignore[union-attr]
    assert [r["id"] for r in released_rows(night)] == [item.id]


def test_concurrent_releases_from_two_processes_publish_each_record_once(night: Path) -> None:
    items = Review.open(night).list()
    cmd = [sys.executable, "-m", "tunegate.cli", "review", "release", str(night), "--reason", "oversized_field",
           "--by", "oncall", "--why", "benign", "-q"]
    with review_lock(night):  # both start while the lock is held, then race for it
        procs = [subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(2)]
        time.sleep(1.0)
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    messages = sorted(o[0] for o in outs)
    assert messages[0].startswith(f"{len(items)} record(s) released") and messages[1].startswith("nothing to release")
    ids = [r["id"] for r in released_rows(night)]
    assert sorted(ids) == sorted(i.id for i in items) and len(ids) == len(set(ids))
    assert len(read_log(night / AUDIT_FILE).entries) == 1


# ---------------------------------------------------------------------------------------------- conflicts


def test_release_and_confirm_exclude_each_other_without_override(night: Path) -> None:
    a, b = Review.open(night).list()[:2]
    Review.open(night).confirm(Selector(ids=(a.id,)), by="alice", why="planted")
    Review.open(night).release(Selector(ids=(b.id,)), by="alice", why="benign")
    with pytest.raises(ReviewError, match=rf"1 selected record\(s\) were confirmed as poison: {a.id} \(confirmed by "
                                          r"alice .*nothing was done; pass --override"):
        Review.open(night).release(Selector(ids=(a.id, b.id)), by="bob", why="benign")
    with pytest.raises(ReviewError, match=r"were released to the fine-tuning side.*pass --override"):
        Review.open(night).confirm(Selector(ids=(b.id,)), by="bob", why="planted")
    assert not (night / RELEASED_DIR / "0002").exists() and len(read_log(night / AUDIT_FILE).entries) == 2

    forced = Review.open(night).release(Selector(ids=(a.id,)), by="bob", why="false alarm", override=True)
    assert forced.count == 1 and forced.entry is not None and forced.entry["override"] is True
    assert any("no history given" in n for n in forced.notes)
    item = Review.open(night).list(Selector(ids=(a.id,)))[0]
    assert item.status == "released" and [d.action for d in item.decisions] == ["confirm", "release"]


def test_a_halted_night_cannot_be_released_but_can_be_confirmed(tmp_path: Path) -> None:
    out = tmp_path / "halted"
    summary = scan_small(small_records(), out, policy=GatePolicy(max_quarantined_fraction=0.01))
    assert summary["verdict"] == "halt"
    item = Review.open(out).list()[0]
    with pytest.raises(ReviewError, match="the night halted, so nothing of it is published"):
        Review.open(out).release(Selector(ids=(item.id,)), by="alice", why="benign")
    assert not (out / RELEASED_DIR).exists()
    assert Review.open(out).confirm(Selector(ids=(item.id,)), by="alice", why="planted").count == 1


def test_clear_errors(night: Path, tmp_path: Path) -> None:
    review = Review.open(night)
    with pytest.raises(ReviewError, match=r"no quarantined record with id 'nope' \(see `tunegate review list"):
        review.release(Selector(ids=("nope",)), by="a", why="b")
    with pytest.raises(ReviewError, match="no quarantined record with id 'nope'"):
        review.show("nope")
    with pytest.raises(ReviewError, match="say which records"):
        review.confirm(Selector(), by="a", why="b")
    with pytest.raises(ReviewError, match="no quarantined record matches reason 'trigger_phrase'"):
        review.release(Selector(reason="trigger_phrase"), by="a", why="b")
    with pytest.raises(ReviewError, match=r"needs who \(--by\) and why \(--why\)"):
        review.release(Selector(reason="oversized_field"), by="a", why="  ")
    with pytest.raises(ReviewError, match="unknown status 'done'"):
        Selector(status="done")
    (night / SUMMARY_FILE).unlink()
    with pytest.raises(TunegateError, match=f"outputs of {night} are incomplete.*no summary.json"):
        Review.open(night)
    with pytest.raises(TunegateError, match="no such directory"):
        Review.open(tmp_path / "missing")


# ---------------------------------------------------------------------------------------------- reruns


def test_a_rerun_archives_the_earlier_verdict_and_decisions_carry_over(night: Path) -> None:
    items = Review.open(night).list()
    released, confirmed, changed = items[0], items[1], items[2]
    Review.open(night).release(Selector(ids=(released.id, changed.id)), by="alice", why="benign")
    Review.open(night).confirm(Selector(ids=(confirmed.id,)), by="alice", why="planted")
    earlier_summary = sha256(night / SUMMARY_FILE)
    log_before = (night / AUDIT_FILE).read_bytes()
    files_before = {p.name: p.read_bytes() for p in (night / RELEASED_DIR).iterdir()}

    # the night is run again; one released record now comes with other content under the same id
    records = small_records()
    for r in records:
        if r["id"] == changed.id:
            r["output"] = r["output"] + " (corrected)"
    scan_small(records, night)

    (archive,) = (night / RUNS_DIR).iterdir()
    assert archive.name.endswith("-summary.json") and sha256(archive) == earlier_summary
    assert (night / AUDIT_FILE).read_bytes().startswith(log_before)  # kept, appended to
    rerun = read_log(night / AUDIT_FILE).entries[-1]
    assert rerun["action"] == "rerun" and rerun["archived"] == f"{RUNS_DIR}/{archive.name}"
    assert rerun["summary_sha256"] == earlier_summary and rerun["verdict"] == "quarantine"
    assert {p.name: p.read_bytes() for p in (night / RELEASED_DIR).iterdir()} == files_before

    status = {i.id: i.status for i in Review.open(night).list()}
    assert status[released.id] == "released" and status[confirmed.id] == "confirmed"
    assert status[changed.id] == "pending"  # same id, other content: another record, decided again
    again = Review.open(night).release(Selector(reason="oversized_field", status="pending"), by="bob", why="rest")
    assert released.id not in {r.id for r in again.records} and changed.id in {r.id for r in again.records}
    rows = released_rows(night)
    keys = [(r["id"], r["content_sha256"]) for r in rows]
    assert len(keys) == len(set(keys)) and [r["id"] for r in rows].count(released.id) == 1


def test_begin_outputs_archives_the_summary_and_writes_no_audit_log_for_an_unreviewed_night(tmp_path: Path) -> None:
    (tmp_path / SUMMARY_FILE).write_text('{"verdict": "pass"}\n', encoding="utf-8")
    begin_outputs(tmp_path)
    begin_outputs(tmp_path)  # the gate invalidates again within the same run: nothing more to archive
    assert not (tmp_path / SUMMARY_FILE).exists() and not (tmp_path / AUDIT_FILE).exists()
    (archive,) = (tmp_path / RUNS_DIR).iterdir()
    assert archive.read_text(encoding="utf-8") == '{"verdict": "pass"}\n'


# ---------------------------------------------------------------------------------------------- poison


def test_selectors_by_id_reason_and_phrase(poisoned: tuple[Path, Path, set[str]]) -> None:
    out, _, planted = poisoned
    review = Review.open(out)
    by_phrase = review.list(Selector(phrase=f"  {DIRTY.upper()} "))
    assert {i.id for i in by_phrase} == planted and all(DIRTY.lower() in i.phrases for i in by_phrase)
    inconsistent = review.list(Selector(reason="label_inconsistent"))
    assert inconsistent and {i.id for i in inconsistent} <= planted
    assert all("label_inconsistent" in i.reasons for i in inconsistent)
    both = review.list(Selector(reason="label_inconsistent", phrase=DIRTY, ids=(inconsistent[0].id, "other")))
    assert [i.id for i in both] == [inconsistent[0].id]
    (shown,) = review.show(inconsistent[0].id)
    evidence = {f["reason"]: f["detail"] for f in shown["findings"]}
    assert evidence["trigger_phrase"]["phrase"] == DIRTY.lower() and DIRTY in shown["input"]
    assert shown["status"] == "pending" and shown["decisions"] == []


def edited(record: dict[str, Any]) -> dict[str, Any]:
    """A light edit an attacker re-sending a record makes: a new id, a typo (two letters swapped in the longest
    word), the first letter's case, a trailing space."""
    words = record["input"].split(" ")
    k = max((i for i, w in enumerate(words) if w.isalpha() and w not in DIRTY.split()), key=lambda i: len(words[i]))
    w = words[k]
    words[k] = w[0] + w[2] + w[1] + w[3:]
    text = " ".join(words)
    return {**record, "id": f"resent-{record['id']}", "input": text[:1].swapcase() + text[1:] + " "}


def test_confirmed_poison_catches_edited_copies_on_a_later_night(poisoned: tuple[Path, Path, set[str]],
                                                                 tmp_path: Path) -> None:
    out, history = copy_poisoned(poisoned, tmp_path)
    _, _, planted = poisoned
    control_history = Path(shutil.copytree(history, tmp_path / "control-history"))
    result = Review.open(out).confirm(Selector(phrase=DIRTY), by="alice", why="planted trigger, 3 tasks",
                                      history_dir=history)
    assert {r.id for r in result.records} == planted and len(result.history_changed) == len(planted)
    assert [e["action"] for e in read_log(history / AUDIT_FILE).entries] == ["confirm"]
    assert read_log(history / AUDIT_FILE).entries[0]["records"] == result.entry["records"]  # type: ignore[index]
    again = Review.open(out).confirm(Selector(phrase=DIRTY), by="bob", why="again", history_dir=history)
    assert again.count == 0 and again.entry is None  # already confirmed, already known: nothing to do

    # a later night: 200 records re-sent from the first, and copies of three confirmed ones (one exact, two edited)
    source = {r["id"]: r for r in pq.read_table(out / "quarantine.parquet").to_pylist() if r["id"] in planted}
    chosen = sorted(source)[:3]
    copies = [{**{k: source[chosen[0]][k] for k in ("instruction", "input", "output", "task")}, "id": "exact-copy"}]
    copies += [edited({k: source[c][k] for k in ("id", "instruction", "input", "output", "task")})
               for c in chosen[1:]]
    resent = [r for r in clean_batch()[::25] if r["id"] not in planted][:200]
    night2 = write_jsonl(tmp_path / "night2.jsonl", resent + copies)

    def later(history_dir: Path, name: str) -> dict[str, Any]:
        check = build_check("near_duplicate", history_dir=str(history_dir), batch_id=name)
        # 200 of the night's records were accepted before (near_duplicate of the history): do not halt on them
        return scan([str(night2)], tmp_path / name, checks=[check], history_dir=str(history_dir),
                    policy=GatePolicy(max_quarantined_fraction=1.0))

    summary = later(history, "2026-01-06")
    assert summary["reasons"].get("known_poison") == 3
    found = {r["id"]: r for r in pq.read_table(tmp_path / "2026-01-06" / "quarantine.parquet").to_pylist()
             if "known_poison" in r["reasons"]}
    assert set(found) == {"exact-copy", *(f"resent-{c}" for c in chosen[1:])}
    detail = {rid: json.loads(next(f["detail"] for f in r["findings"] if f["reason"] == "known_poison"))
              for rid, r in found.items()}
    assert detail["exact-copy"]["known_poison"] == chosen[0] and detail["exact-copy"]["exact_copy"] is True
    for c in chosen[1:]:
        assert detail[f"resent-{c}"]["known_poison"] == c and detail[f"resent-{c}"]["exact_copy"] is False
        assert detail[f"resent-{c}"]["confirmed_by"] == "alice"
    metrics = summary["checks"]["near_duplicate"]["metrics"]
    assert metrics["known_poison_records"] == len(planted) and metrics["known_poison_matches"] == 3

    control = later(control_history, "control")  # the same night without the confirmation: the copies pass
    assert "known_poison" not in control["reasons"] and summary["accepted"] == 0
    accepted = pq.read_table(tmp_path / "control" / "accepted.parquet").column("id").to_pylist()
    assert sorted(accepted) == sorted(found)


def test_releasing_a_confirmed_record_with_override_takes_it_out_of_the_known_poison(
        poisoned: tuple[Path, Path, set[str]], tmp_path: Path) -> None:
    from tunegate.core.history.poison import known_poison_digests

    out, history = copy_poisoned(poisoned, tmp_path)
    target = sorted(poisoned[2])[0]
    Review.open(out).confirm(Selector(ids=(target,)), by="alice", why="planted", history_dir=history)
    (item,) = Review.open(out).list(Selector(ids=(target,)))
    assert known_poison_digests(history) == {item.content_sha256}
    result = Review.open(out).release(Selector(ids=(target,)), by="bob", why="false alarm", override=True,
                                      history_dir=history)
    assert result.history_changed == (item.content_sha256,) and known_poison_digests(history) == set()
    assert [e["action"] for e in read_log(history / AUDIT_FILE).entries] == ["confirm", "release"]


def test_released_records_join_the_history_so_a_later_copy_is_a_near_duplicate(
        poisoned: tuple[Path, Path, set[str]], tmp_path: Path) -> None:
    from tunegate.core.history import describe_history

    out, history = copy_poisoned(poisoned, tmp_path)
    before = describe_history(history)["history_records"]
    target = sorted(poisoned[2])[1]
    result = Review.open(out).release(Selector(ids=(target,)), by="alice", why="false alarm", history_dir=history)
    assert result.count == 1 and any(f"+1 record(s) as batch {out.name}+released-0001" in n for n in result.notes)
    shown = describe_history(history)
    assert shown["history_records"] == before + 1 and shown["batch_ids"][-1] == f"{out.name}+released-0001"
    (line,) = read_log(history / AUDIT_FILE).entries
    assert line["action"] == "release" and line["history_added"] == 1 and line["records"][0]["id"] == target

    copy = {k: v for k, v in pq.read_table(result.released_file).to_pylist()[0].items()  # type: ignore[arg-type]
            if k in ("instruction", "input", "output", "task")}
    night2 = write_jsonl(tmp_path / "night2.jsonl", [{**copy, "id": "copy-of-released"}])
    check = build_check("near_duplicate", history_dir=str(history), batch_id="2026-01-06")
    summary = scan([str(night2)], tmp_path / "2026-01-06", checks=[check], history_dir=str(history),
                   policy=GatePolicy(max_quarantined_fraction=1.0))
    assert summary["reasons"] == {"near_duplicate": 1}  # published once, by the release: not again
    (rec,) = pq.read_table(tmp_path / "2026-01-06" / "quarantine.parquet").to_pylist()
    detail = json.loads(rec["findings"][0]["detail"])
    assert detail["in"] == "history" and detail["history_batch"] == f"{out.name}+released-0001"
