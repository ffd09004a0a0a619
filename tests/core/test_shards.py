"""A night in shards (tunegate.core.shards): the plan, one shard at a time, the merge, and the result that equals
one ingest and scan of the same input."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from tests.conftest import DATA, FORMATS, NIGHTLY, write_jsonl
from tunegate.core.checks import run_checks
from tunegate.core.checks.gx_suite import GxSuiteCheck
from tunegate.core.gate import ACCEPTED_FILE, QUARANTINE_FILE, gate
from tunegate.core.ingest import CANONICAL_FILE, INGEST_FILE, REJECTED_FILE, ingest
from tunegate.core.pipeline import scan
from tunegate.core.policy import GatePolicy
from tunegate.core.readers import InputOptions
from tunegate.core.readers.pieces import InputPiece, split_jsonl
from tunegate.core.shards import (
    SHARDS_DIR,
    ShardPlan,
    cut,
    merge_checks,
    merge_shards,
    plan_shards,
    run_shard,
    shard_count,
    shard_dir,
    validate_merged,
)
from tunegate.exceptions import ConfigError, TunegateError


def shard_night(inputs: list[str], work: Path, shards: int | None, policy: GatePolicy | None = None) -> ShardPlan:
    plan = plan_shards(inputs, work, shards=shards)
    for i in range(plan.count):
        run_shard(work, i, policy=policy)
    merge_shards(work, policy=policy)
    return plan


def assert_same_work(a: Path, b: Path) -> None:
    """The canonical table, rejected records and ingest record of two work directories are the same."""
    assert pq.read_table(a / CANONICAL_FILE).equals(pq.read_table(b / CANONICAL_FILE))
    assert (a / REJECTED_FILE).read_bytes() == (b / REJECTED_FILE).read_bytes()
    ja, jb = (json.loads((d / INGEST_FILE).read_text(encoding="utf-8")) for d in (a, b))
    assert {**ja, "work_dir": ""} == {**jb, "work_dir": ""}


def test_cut_keeps_order_balances_bytes_and_leaves_no_shard_empty() -> None:
    assert cut([10, 10, 10, 10], 2) == [(0, 2), (2, 4)]
    assert cut([100, 1, 1, 1], 3) == [(0, 1), (1, 2), (2, 4)]
    assert cut([1, 1, 1, 100], 2) == [(0, 3), (3, 4)]
    assert cut([5, 5], 7) == [(0, 1), (1, 2)]
    assert cut([0, 0, 0], 3) == [(0, 1), (1, 2), (2, 3)]


def test_shard_count_from_the_param_or_the_batch_size() -> None:
    assert shard_count(100 << 20, None, shard_bytes=32 << 20) == 4
    assert shard_count(1, None) == 1
    assert shard_count(100 << 20, 7) == 7
    for bad in (0, -1, True, 2.5):
        with pytest.raises(ConfigError, match="shards must be a positive integer"):
            shard_count(1, bad)  # type: ignore[arg-type]


def test_a_jsonl_file_is_cut_at_line_starts_numbered_as_in_the_whole_file() -> None:
    pieces = split_jsonl(str(NIGHTLY), 4, InputOptions())
    assert pieces is not None and len(pieces) == 4
    data = NIGHTLY.read_bytes()
    assert [p.start for p in pieces] == [0] + [p.stop for p in pieces[:-1]]
    assert pieces[-1].stop == len(data)
    for p in pieces:
        assert p.start == 0 or data[p.start - 1:p.start] == b"\n"
        assert p.first_line == data[:p.start].count(b"\n") + 1
        assert p.layout == "alpaca" and InputPiece.from_json(p.to_json()) == p
    # compressed files and other containers are read whole
    assert split_jsonl(str(DATA / "superni_slice.jsonl.gz"), 4, InputOptions()) is None
    assert split_jsonl(str(FORMATS / "alpaca.csv"), 4, InputOptions()) is None


@pytest.mark.parametrize("shards", [1, 3, 8])
def test_the_merged_shards_are_one_ingest_of_the_input(tmp_path: Path, shards: int) -> None:
    # the sample night: one file with malformed records, cut into pieces
    ingest([str(NIGHTLY)], tmp_path / "whole")
    plan = shard_night([str(NIGHTLY)], tmp_path / "sharded", shards)
    assert plan.count == shards
    assert_same_work(tmp_path / "whole", tmp_path / "sharded")


def test_derived_ids_are_numbered_across_shards_as_in_one_ingest(tmp_path: Path) -> None:
    # records without an id get sha256:<hash>[-n]; copies of one record in several shards must be numbered in
    # input order over the whole night, not per shard
    with gzip.open(DATA / "self_instruct_slice.jsonl.gz", "rt", encoding="utf-8") as f:
        records = [json.loads(line) for line in f][:40]
    no_id = [{k: v for k, v in r.items() if k != "id"} for r in records]
    inputs = tmp_path / "in"
    inputs.mkdir()
    write_jsonl(inputs / "a.jsonl", no_id[:20])
    write_jsonl(inputs / "b.jsonl", no_id[10:30] + records[30:])  # ten copies of a's records, ten records with ids
    write_jsonl(inputs / "c.jsonl", no_id[:5] + no_id[10:15])  # second copies, and third ones
    (inputs / "d.jsonl").write_text('{"instruction": "no output"\nnot json\n', encoding="utf-8")
    ingest([str(inputs)], tmp_path / "whole")
    plan = shard_night([str(inputs)], tmp_path / "sharded", 4)
    assert plan.count == 4
    assert_same_work(tmp_path / "whole", tmp_path / "sharded")
    ids = [i for i in pq.read_table(tmp_path / "sharded" / CANONICAL_FILE, columns=["id"]).column(0).to_pylist()
           if i.startswith("sha256:")]
    assert len(ids) == 50 and sum(i.endswith("-2") for i in ids) == 15 and sum(i.endswith("-3") for i in ids) == 5


def test_every_format_sharded_equals_one_ingest(tmp_path: Path) -> None:
    ingest([str(FORMATS)], tmp_path / "whole")
    plan = shard_night([str(FORMATS)], tmp_path / "sharded", 5)
    assert plan.count == 5
    assert_same_work(tmp_path / "whole", tmp_path / "sharded")


def test_a_shard_rerun_replaces_only_that_shard_and_the_merge_is_idempotent(tmp_path: Path) -> None:
    work = tmp_path / "work"
    shard_night([str(NIGHTLY)], work, 3)
    before = {i: (shard_dir(work, i) / "shard.json").stat().st_mtime_ns for i in range(3)}
    canonical = pq.read_table(work / CANONICAL_FILE)
    run_shard(work, 1)
    after = {i: (shard_dir(work, i) / "shard.json").stat().st_mtime_ns for i in range(3)}
    assert after[0] == before[0] and after[2] == before[2] and after[1] != before[1]
    assert sorted(p.name for p in (work / SHARDS_DIR).iterdir() if not p.name.endswith((".lock", ".owner"))) == [
        "00000", "00001", "00002", "plan.json"]  # no temporary directory left behind
    merge_shards(work)
    merge_shards(work)
    assert pq.read_table(work / CANONICAL_FILE).equals(canonical)
    parts = sorted(p.name for p in (work / "embeddings").rglob("part-*.keys.npy"))
    assert len(parts) == 1  # the merge replaces its vectors, it does not add a second copy


def test_a_shard_killed_before_it_is_complete_leaves_nothing_the_merge_reads(tmp_path: Path) -> None:
    work = tmp_path / "work"
    plan_shards([str(NIGHTLY)], work, shards=2)
    run_shard(work, 1)
    env = {**os.environ, "TUNEGATE_FAULT_POINT": "shard_written"}
    killed = subprocess.run([sys.executable, "-c", "import sys; from tunegate.core.shards import run_shard; "
                             "run_shard(sys.argv[1], 0)", str(work)], check=False, env=env, capture_output=True,
                            timeout=300)
    assert killed.returncode == -signal.SIGKILL
    assert not shard_dir(work, 0).exists() and list((work / SHARDS_DIR).glob(".00000.tmp*"))
    with pytest.raises(TunegateError, match=r"shard 0 of 2 is not complete"):
        merge_shards(work)
    run_shard(work, 0)  # the retry: the dead try's temporary folder goes, the shard lands whole
    assert not list((work / SHARDS_DIR).glob(".00000.tmp*"))
    merge_shards(work)
    ingest([str(NIGHTLY)], tmp_path / "whole")
    assert_same_work(tmp_path / "whole", work)


def test_the_merge_refuses_a_missing_shard(tmp_path: Path) -> None:
    work = tmp_path / "work"
    plan = plan_shards([str(NIGHTLY)], work, shards=2)
    run_shard(work, 0)
    with pytest.raises(TunegateError, match=r"shard 1 of 2 is not complete"):
        merge_shards(work)
    with pytest.raises(TunegateError, match="not in the plan"):
        run_shard(work, plan.count)


def _placement(out: Path) -> dict[str, Any]:
    quarantine = pq.read_table(out / QUARANTINE_FILE, columns=["id", "content_sha256", "reasons"]).to_pylist()
    accepted = pq.read_table(out / ACCEPTED_FILE)
    return {"accepted": accepted.to_pylist(), "quarantine": quarantine,
            "rejected": (out / REJECTED_FILE).read_bytes()}


@pytest.mark.slow  # every default check twice over the sample night (~1 min)
def test_the_sharded_night_gates_exactly_as_the_unsharded_one(tmp_path: Path) -> None:
    policy = GatePolicy()
    whole = scan([str(NIGHTLY)], tmp_path / "whole", policy=policy)
    work = tmp_path / "sharded" / "work"
    shard_night([str(NIGHTLY)], work, 4, policy)
    validate_merged(work, policy=policy)
    run_checks(str(work), merge_checks(policy))
    sharded = gate(work, tmp_path / "sharded", policy)
    assert sharded["verdict"] == whole["verdict"] == "quarantine"
    for key in ("total", "accepted", "quarantined", "rejected", "reasons"):
        assert sharded[key] == whole[key], key
    assert _placement(tmp_path / "sharded") == _placement(tmp_path / "whole")


def _gx_outputs(work: Path, key: str) -> tuple[Any, Any, str]:
    findings = pq.read_table(work / "findings" / f"{key}.parquet").to_pylist()
    summary = json.loads((work / "findings" / f"{key}.json").read_text(encoding="utf-8"))
    return findings, summary, (work / "findings" / f"{key}.html").read_text(encoding="utf-8")


@pytest.mark.slow  # both suites, whole and in shards (~1 min with the GX import)
def test_gx_suites_in_shards_equal_one_validation_of_the_night(tmp_path: Path) -> None:
    # the sample night (label errors: the label sets are derived from the whole night), plus a record that
    # reuses an id of another shard with other content (the id -> content expectation spans shards)
    records = []
    for line in NIGHTLY.read_bytes().splitlines():
        try:
            record = json.loads(line.decode("utf-8"))
        except ValueError:  # the night's malformed lines
            continue
        if isinstance(record, dict) and record.get("id") and record.get("output"):
            records.append(record)
    stolen = {**records[-1], "id": records[0]["id"]}
    inputs = tmp_path / "in"
    inputs.mkdir()
    write_jsonl(inputs / "a.jsonl", records[:500])
    write_jsonl(inputs / "b.jsonl", [*records[500:], stolen])
    whole, sharded = tmp_path / "whole", tmp_path / "sharded"
    policy = GatePolicy()
    ingest([str(inputs)], whole)
    run_checks(str(whole), [GxSuiteCheck(suite=s) for s in policy.suites])
    shard_night([str(inputs)], sharded, 3, policy)
    results = validate_merged(sharded, policy=policy)
    assert [r.check for r in results] == ["gx_instruction_record", "gx_instruction_quality"]
    for r in results:
        a, b = _gx_outputs(sharded, r.check), _gx_outputs(whole, r.check)
        assert a[0] == b[0], r.check  # every finding, row for row
        assert a[1] == b[1], r.check  # statistics, failed expectations, issues, label sets
        assert a[2] == b[2], r.check  # the suite's page
    record = _gx_outputs(sharded, "gx_instruction_record")
    rows = {f["row"] for f in record[0] if f["reason"] == "gx_id_collision"}
    assert len(rows) >= 2  # the id's first record (shard 0) and the one that took it (last shard)
    quality = _gx_outputs(sharded, "gx_instruction_quality")[1]
    assert quality["metrics"]["label_sets"]["tasks"] > 0  # derived over the night, equal to the whole run's
