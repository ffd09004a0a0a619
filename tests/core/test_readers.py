"""Each reader on real-shaped data (tests/data/formats holds the same real SuperNI records in every format)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from tests.conftest import FORMATS
from tunegate.core.readers import Rejection, read_file
from tunegate.exceptions import InputError


def _records(path: Path | str, fmt: str = "auto") -> tuple[list[dict], list[Rejection]]:
    recs, rejs = [], []
    for item in read_file(str(path), fmt):
        (rejs if isinstance(item, Rejection) else recs).append(item)
    return recs, rejs


@pytest.fixture(scope="module")
def reference() -> list[dict]:
    return json.loads((FORMATS / "alpaca.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("alpaca.json", "auto"),
        ("alpaca.json", "alpaca"),
        ("dolly.jsonl", "auto"),
        ("openai.jsonl", "auto"),
        ("sharegpt.json", "auto"),
        ("alpaca.csv", "auto"),
        ("alpaca.csv", "csv"),
        ("alpaca.parquet", "auto"),
        ("alpaca.parquet", "parquet"),
    ],
)
def test_every_format_reads_the_same_records(name: str, fmt: str, reference: list[dict]) -> None:
    recs, rejs = _records(FORMATS / name, fmt)
    assert rejs == []
    assert len(recs) == len(reference) == 20
    for rec, ref in zip(recs, reference, strict=True):
        assert rec["output"] == ref["output"]
        if name.startswith("sharegpt"):  # one human turn holding instruction and input
            assert rec["instruction"] == ref["instruction"] + "\n\n" + ref["input"]
        elif name.startswith("openai"):  # system prompt = task definition, user turn = the input
            assert (rec["instruction"], rec["input"]) == (ref["input"], ref["instruction"])
        else:
            assert (rec["instruction"], rec["input"]) == (ref["instruction"], ref["input"])
        assert rec["source_file"] == str(FORMATS / name)
        assert len(rec["content_sha256"]) == 64


def test_ids_are_kept_and_lines_are_real_line_numbers(reference: list[dict]) -> None:
    recs, _ = _records(FORMATS / "alpaca.json")
    assert [r["id"] for r in recs] == [r["id"] for r in reference]
    lines = (FORMATS / "alpaca.json").read_text(encoding="utf-8").splitlines()
    for rec in recs:  # every element starts with '{' on the line the reader names
        assert lines[rec["source_line"] - 1].strip() == "{"


def test_chat_formats_keep_the_conversation() -> None:
    recs, _ = _records(FORMATS / "openai.jsonl")
    assert [m["role"] for m in recs[0]["messages"]] == ["system", "user", "assistant"]
    recs, _ = _records(FORMATS / "sharegpt.json")
    assert [m["role"] for m in recs[0]["messages"]] == ["user", "assistant"]


def test_dolly_category_becomes_task() -> None:
    recs, _ = _records(FORMATS / "dolly.jsonl")
    assert recs[0]["task"] == "task363_sst2_polarity_classification"
    assert recs[0]["id"] is None  # dolly has no ids: ingest derives them


def test_superni_task_file() -> None:
    path = FORMATS / "task363_sst2_polarity_classification.json"
    recs, rejs = _records(path)
    assert rejs == [] and len(recs) == 10
    doc = json.loads(path.read_text(encoding="utf-8"))
    assert all(r["instruction"] == doc["Definition"][0] for r in recs)
    assert [r["output"] for r in recs] == [i["output"][0] for i in doc["Instances"]]
    assert {r["task"] for r in recs} == {"task363_sst2_polarity_classification"}
    assert [r["source_line"] for r in recs] == list(range(1, 11))


def test_gzip_jsonl_via_fsspec_url(tmp_path: Path) -> None:
    src = (FORMATS / "dolly.jsonl").read_bytes()
    path = tmp_path / "dolly.jsonl.gz"
    path.write_bytes(gzip.compress(src))
    recs, rejs = _records(f"file://{path}")
    assert len(recs) == 20 and rejs == []


def test_bad_records_become_rejections_with_line_and_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(
        b'{"instruction": "a", "output": "b"}\n'
        b'{"instruction": "a", "output": \n'  # malformed JSON
        b'{"instruction": "a", "output": 3}\n'  # wrong type
        b'{"instruction": "a"}\n'  # missing required field
        b'{"instruction": "caf\xe9", "output": "x"}\n'  # invalid UTF-8
        b"\n"  # blank lines are not records
        b'["not", "an", "object"]\n'
        b'{"instruction": "last", "output": "ok"}\n'
    )
    recs, rejs = _records(path)
    assert [r["instruction"] for r in recs] == ["a", "last"]
    assert [(r.source_line, r.error.split(":")[0]) for r in rejs] == [
        (2, "invalid JSON"),
        (3, "field 'output' must be a string, got int"),
        (4, "missing required field 'output'"),
        (5, "invalid UTF-8 at byte 20"),
        (7, "expected a JSON object, got list"),
    ]
    assert rejs[0].raw == '{"instruction": "a", "output": '


def test_truncated_json_array_keeps_what_precedes_and_rejects_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "cut.json"
    path.write_text('[\n {"instruction": "a", "output": "b"},\n {"instruction": "c", "outp', encoding="utf-8")
    recs, rejs = _records(path)
    assert len(recs) == 1
    assert len(rejs) == 1 and rejs[0].source_line == 3 and "rest of the file is unreadable" in rejs[0].error


def test_json_array_with_invalid_utf8_element(tmp_path: Path) -> None:
    path = tmp_path / "mixed.json"
    path.write_bytes(b'[{"instruction": "a", "output": "b"},\n{"instruction": "\xff", "output": "b"},\n'
                     b'{"instruction": "c", "output": "d"}]')
    recs, rejs = _records(path)
    assert [r["instruction"] for r in recs] == ["a", "c"]
    assert [(r.source_line, r.error) for r in rejs] == [(2, "invalid UTF-8")]


def test_csv_rows_with_wrong_field_count_are_rejected(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text('instruction,input,output\n"multi\nline",,ok\nonly,two\nq,,a\n', encoding="utf-8")
    recs, rejs = _records(path)
    assert [(r["instruction"], r["source_line"]) for r in recs] == [("multi\nline", 2), ("q", 5)]
    assert [(r.source_line, r.error) for r in rejs] == [(4, "row has 2 fields, header has 3")]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "file is empty"),
        (b"   \n\n", "file is empty"),
        (b"[]", "file holds no records"),
        (b"hello world", "unknown format"),
        (b'{"text": "no instruction fields"}\n', "unknown record format"),
    ],
)
def test_file_level_problems_raise_input_error_naming_the_file(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "in.json"
    path.write_bytes(content)
    with pytest.raises(InputError, match=message) as exc:
        _records(path)
    assert str(path) in str(exc.value)


def test_missing_file_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        _records(tmp_path / "nope.jsonl")


def test_unknown_format_name_is_an_input_error() -> None:
    with pytest.raises(InputError, match="unknown format 'yaml'"):
        _records(FORMATS / "dolly.jsonl", "yaml")


def test_streaming_json_array_across_read_blocks(tmp_path: Path) -> None:
    """Elements larger than the 1 MiB read block still parse, with correct lines."""
    big = "x" * (3 << 20)
    path = tmp_path / "big.json"
    path.write_text(json.dumps([{"instruction": "i", "output": big}, {"instruction": "j", "output": "o"}], indent=1),
                    encoding="utf-8")
    recs, rejs = _records(path)
    assert rejs == [] and [len(r["output"]) for r in recs] == [len(big), 1]
    assert recs[1]["source_line"] == 6
