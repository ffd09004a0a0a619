"""record_size: a field over the policy's limit is quarantined (``oversized_field``) from its lengths alone, and
one huge record no longer costs the gate gigabytes (the GX suites clip their frames to the limit)."""

from __future__ import annotations

import gzip
import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import DATA, slice_records, write_jsonl
from tunegate.core.checks import CanonicalBatch, build_check
from tunegate.core.checks.record_size import DEFAULT_MAX_FIELD_CHARS, RecordSizeCheck, clip_fields
from tunegate.core.ingest import ingest
from tunegate.core.policy import DEFAULT_CHECKS, GatePolicy, load_policy
from tunegate.core.reasons import RECORD_REASONS
from tunegate.exceptions import ConfigError


def _real_text(records: list[dict[str, Any]], chars: int, seed: int = 0) -> str:
    """``chars`` characters of real-looking text: sentences of the slice, repeated in random order."""
    sentences = [s.strip() + "." for r in records for s in f"{r['instruction']} {r['input']}".split(".")
                 if len(s.strip()) > 20]
    rng = random.Random(seed)
    parts: list[str] = []
    n = 0
    while n < chars:
        s = rng.choice(sentences)
        parts.append(s)
        n += len(s) + 1
    return " ".join(parts)[:chars]


def _batch(tmp_path: Path, records: list[dict[str, Any]]) -> CanonicalBatch:
    tmp_path.mkdir(parents=True, exist_ok=True)
    work = tmp_path / "work"
    ingest([str(write_jsonl(tmp_path / "batch.jsonl", records))], work)
    return CanonicalBatch(work)


def test_a_field_over_the_limit_is_flagged_with_field_length_and_limit(tmp_path: Path) -> None:
    records = slice_records()[:200]
    huge = dict(records[0], id="huge-1", output=_real_text(records, 300_000))
    long_input = dict(records[1], id="long-input", input=_real_text(records, 250_000, seed=1))
    at_limit = dict(records[2], id="at-limit", output=_real_text(records, DEFAULT_MAX_FIELD_CHARS, seed=2))
    batch = _batch(tmp_path, [*records[3:100], huge, long_input, at_limit, *records[100:]])
    result = build_check("record_size").run(batch)
    assert [(f.row, f.reason) for f in result.findings] == [(97, "oversized_field"), (98, "oversized_field")]
    first, second = (f.detail for f in result.findings)
    assert first == {"field": "output", "length": 300_000, "limit": DEFAULT_MAX_FIELD_CHARS,
                     "fields": {"output": 300_000}}
    assert (second["field"], second["length"]) == ("input", 250_000)
    assert result.metrics["oversized"] == 2 and result.metrics["longest"]["output"] == 300_000
    # characters, not bytes: 150k two-byte characters are 300 KB but under the limit
    batch = _batch(tmp_path / "utf8", [dict(records[0], output="é" * 150_000)])
    assert build_check("record_size").run(batch).findings == []


def test_a_long_chat_turn_is_a_long_field(tmp_path: Path) -> None:
    records = slice_records()[:5]
    # the later turns are in no other column: only ``messages`` holds the huge one
    chat = {"id": "chat-1", "messages": [{"role": "user", "content": "hello"},
                                         {"role": "assistant", "content": "ok"},
                                         {"role": "user", "content": _real_text(records, 210_000)},
                                         {"role": "assistant", "content": "done"}]}
    small = {"id": "chat-2", "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}
    (tmp_path / "chat.jsonl").write_text(json.dumps(small) + "\n" + json.dumps(chat) + "\n", encoding="utf-8")
    work = tmp_path / "work"
    ingest([str(tmp_path / "chat.jsonl")], work, fmt="openai")
    result = build_check("record_size", max_field_chars=100_000).run(CanonicalBatch(work))
    assert [(f.row, f.detail["field"], f.detail["length"]) for f in result.findings] == [(1, "messages", 210_000)]


def test_the_clean_slices_flag_nothing(tmp_path: Path) -> None:
    for path in sorted(DATA.glob("*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            records = [json.loads(line) for line in f]
        result = build_check("record_size").run(_batch(tmp_path / path.stem, records))
        assert result.findings == [], path.name
        assert max(result.metrics["longest"].values()) < DEFAULT_MAX_FIELD_CHARS / 5, path.name


@pytest.mark.parametrize("value", [0, -5, "big", 1.5, True])
def test_a_bad_limit_fails_naming_the_check(value: Any, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="record_size max_field_chars must be an integer"):
        build_check("record_size", max_field_chars=value)
    with pytest.raises(ConfigError, match="record_size: unknown option 'max_chars'"):
        build_check("record_size", max_chars=10)
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"checks:\n  record_size: {{max_field_chars: {json.dumps(value)}}}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="record_size"):
        load_policy(policy)


def test_it_runs_first_by_default_and_its_reason_is_registered() -> None:
    assert DEFAULT_CHECKS[0] == "record_size"
    assert GatePolicy().enabled_checks()[0][0] == "record_size"
    assert "oversized_field" in RECORD_REASONS
    assert isinstance(build_check("record_size", max_field_chars=50_000), RecordSizeCheck)


def test_gx_frames_are_clipped_to_the_limit_plus_one() -> None:
    keep = DEFAULT_MAX_FIELD_CHARS + 1
    message = pa.struct([("role", pa.string()), ("content", pa.string())])
    table = pa.table({
        "output": ["a" * (keep + 5_000), "short", None],
        "task": ["t" * (keep + 10), "t", "t"],  # not a text field: left alone
        "messages": pa.array([[{"role": "user", "content": "x" * (keep + 1)}, {"role": "assistant", "content": "y"}],
                              None, []], pa.list_(message)),
    }).slice(0, 3)
    clipped = clip_fields(table)
    assert [None if v is None else len(v) for v in clipped.column("output").to_pylist()] == [keep, 5, None]
    assert len(clipped.column("task")[0].as_py()) == keep + 10
    assert clipped.column("messages").to_pylist() == [
        [{"role": "user", "content": "x" * keep}, {"role": "assistant", "content": "y"}], None, []]
    small = pa.table({"output": ["short"]})
    assert clip_fields(small) is small  # nothing over: nothing copied


def test_gx_still_flags_a_huge_field_it_sees_clipped(tmp_path: Path, gx_check: Any) -> None:
    records = slice_records()[:50]
    batch = _batch(tmp_path, [*records, dict(records[0], id="huge-1", output=_real_text(records, 400_000))])
    reasons = {f.reason for f in gx_check.run(batch).findings if f.row == 50}
    assert "gx_overlong_field" in reasons


_PEAK = """
import resource, sys
from tunegate.cli import main
rc = main(sys.argv[1:])
print("PEAK_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "RC", rc)
"""


@pytest.mark.slow
def test_a_50_mb_record_is_quarantined_in_bounded_memory(tmp_path: Path) -> None:
    """1,000 real records plus one whose output is 50 MB of real sentences, through record_size and both GX
    suites (the poison checks, outside this bound, still read whole fields). Measured (2 cores, 2026-12):
    before the GX clipping 2.62 GB peak, after 1.50 GB; ingest and the gate alone: 0.78 GB."""
    records = slice_records()[:1000]
    huge = dict(records[0], id="huge-1", instruction="Summarize the following notes in one paragraph.",
                output=_real_text(records, 50_000_000))
    path = write_jsonl(tmp_path / "batch.jsonl", [*records[:500], huge, *records[500:]])
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-c", _PEAK, "scan", str(path), "--out", str(out), "-q",
                           "--skip-check", "poison_trigger", "--skip-check", "poison_content"],
                          check=False, capture_output=True, text=True, timeout=300)
    peak_kb = int(proc.stdout.split("PEAK_KB")[1].split()[0])
    assert " RC 0" in proc.stdout, proc.stdout + proc.stderr
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert (summary["quarantined"], summary["accepted"], summary["verdict"]) == (1, 1000, "quarantine")
    quarantined = pq.read_table(out / "quarantine.parquet", columns=["id", "reasons", "findings"])
    assert quarantined.column("id").to_pylist() == ["huge-1"]
    assert "oversized_field" in quarantined.column("reasons")[0].as_py()
    detail = next(json.loads(f["detail"]) for f in quarantined.column("findings")[0].as_py()
                  if f["reason"] == "oversized_field")
    assert (detail["field"], detail["length"]) == ("output", 50_000_000)
    assert peak_kb < 2_000_000, f"peak {peak_kb / 1e6:.2f} GB"
