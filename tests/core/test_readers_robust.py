"""The readers on damaged, hostile and odd input: every record that enters leaves in exactly one place (a
record or a rejection with its file and line), a file that cannot be read at all is an :class:`InputError`
naming it, and nothing hangs, crashes or is dropped silently.

The examples start from the real SuperNI records in tests/data/formats; the property tests at the end throw
arbitrary bytes, JSON values and encodings at :func:`~tunegate.core.ingest.ingest` and count independently.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import FORMATS
from tunegate.core.ingest import CANONICAL_FILE, REJECTED_FILE, ingest
from tunegate.core.readers import InputOptions, Rejection, read_file
from tunegate.exceptions import InputError


def _records(path: Path | str, options: InputOptions | None = None) -> tuple[list[dict], list[Rejection]]:
    recs, rejs = [], []
    for item in read_file(str(path), options=options):
        (rejs if isinstance(item, Rejection) else recs).append(item)
    return recs, rejs


def _line(record: dict[str, Any]) -> str:
    return json.dumps(record, ensure_ascii=False) + "\n"


@pytest.fixture(scope="module")
def alpaca() -> list[dict[str, Any]]:
    """Real SuperNI records in the Alpaca layout (instruction/input/output)."""
    records: list[dict[str, Any]] = json.loads((FORMATS / "alpaca.json").read_text(encoding="utf-8"))
    return records[:40]


def _ingest_all(path: Path, work: Path) -> tuple[int, int, list[dict[str, Any]]]:
    """``(records, rejected, rejections)`` after ingesting ``path``; checks that the outputs hold them."""
    result = ingest([str(path)], work)
    assert pq.read_metadata(work / CANONICAL_FILE).num_rows == result.records
    rejected = [json.loads(line) for line in (work / REJECTED_FILE).read_text(encoding="utf-8").split("\n") if line]
    assert len(rejected) == result.rejected
    return result.records, result.rejected, rejected


# --------------------------------------------------------------------------------------------------
# 1. JSON arrays: nothing after the closing "]" is ignored


def test_two_arrays_back_to_back_are_both_read(tmp_path: Path, alpaca: list[dict]) -> None:
    path = tmp_path / "two.json"
    path.write_text(json.dumps(alpaca[:3], indent=1) + "\n" + json.dumps(alpaca[3:5]), encoding="utf-8")
    recs, rejs = _records(path)
    assert rejs == []
    assert [r["instruction"] for r in recs] == [r["instruction"] for r in alpaca[:5]]
    assert recs[3]["source_line"] == len(json.dumps(alpaca[:3], indent=1).splitlines()) + 1


def test_record_and_garbage_after_the_array_are_rejected_with_their_lines(tmp_path: Path,
                                                                          alpaca: list[dict]) -> None:
    path = tmp_path / "trailing.json"
    path.write_text(json.dumps(alpaca[:2]) + "\n" + json.dumps(alpaca[2]) + "\n\nnot json at all\n",
                    encoding="utf-8")
    recs, rejs = _records(path)
    assert len(recs) == 2
    assert [(r.source_line, r.error.split(" at line")[0]) for r in rejs] == [
        (2, "JSON value after the closing ']' of the array"),
        (4, "invalid JSON after the closing ']' of the array"),
    ]
    assert json.loads(rejs[0].raw) == alpaca[2]
    assert "not json at all" in rejs[1].raw


# --------------------------------------------------------------------------------------------------
# 2. Hostile JSON inside one record


def _deep(depth: int) -> str:
    return '{"instruction": "deep", "output": ' + "[" * depth + "]" * depth + "}"


@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
def test_record_nested_10k_deep_is_rejected_alone(tmp_path: Path, alpaca: list[dict], suffix: str) -> None:
    path = tmp_path / f"deep{suffix}"
    if suffix == ".jsonl":
        path.write_text(_line(alpaca[0]) + _deep(10_000) + "\n" + _line(alpaca[1]), encoding="utf-8")
    else:
        path.write_text("[" + json.dumps(alpaca[0]) + ",\n" + _deep(10_000) + ",\n" + json.dumps(alpaca[1]) + "]",
                        encoding="utf-8")
    records, rejected, rejections = _ingest_all(path, tmp_path / "work")
    assert (records, rejected) == (2, 1)
    assert (rejections[0]["source_line"], rejections[0]["error"]) == (2, "invalid JSON: nested too deep to read")


@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
def test_lone_surrogate_escape_is_rejected_and_outputs_stay_utf8(tmp_path: Path, alpaca: list[dict],
                                                                 suffix: str) -> None:
    bad = '{"instruction": "half a pair \\ud800", "output": "ok", "id": "x\\udfff"}'
    pair = '{"instruction": "a whole pair \\ud83d\\ude00", "output": "ok"}'  # a valid surrogate pair: kept
    path = tmp_path / f"surrogate{suffix}"
    if suffix == ".jsonl":
        path.write_text(_line(alpaca[0]) + bad + "\n" + pair + "\n", encoding="utf-8")
    else:
        path.write_text("[" + json.dumps(alpaca[0]) + ",\n" + bad + ",\n" + pair + "]", encoding="utf-8")
    records, rejected, rejections = _ingest_all(path, tmp_path / "work")
    assert (records, rejected) == (2, 1)
    assert rejections[0]["source_line"] == 2
    assert rejections[0]["error"] == "field 'instruction' is not valid UTF-8"
    assert "\\ud800" in rejections[0]["raw"]
    table = pq.read_table(tmp_path / "work" / CANONICAL_FILE)
    assert table.column("instruction").to_pylist()[1] == "a whole pair \U0001f600"


# --------------------------------------------------------------------------------------------------
# 3. Damaged containers: the records before the damage are kept, the rest is one rejection


def _gzip_jsonl(records: list[dict]) -> bytes:
    return gzip.compress("".join(_line(r) for r in records).encode("utf-8"))


def test_truncated_gzip_keeps_the_lines_before_the_damage(tmp_path: Path, alpaca: list[dict]) -> None:
    data = _gzip_jsonl(alpaca * 20)
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(data[: len(data) // 2])
    recs, rejs = _records(path)
    assert len(recs) > 0
    assert len(rejs) == 1
    assert rejs[0].source_line == len(recs) + 1
    assert rejs[0].error.startswith(f"unreadable data after line {len(recs)} (EOFError")
    assert rejs[0].error.endswith("the rest of the file is unreadable")


@pytest.mark.parametrize("suffix", [".json.gz", ".json.xz", ".csv.gz", ".jsonl.xz"])
def test_truncated_compressed_array_and_csv_keep_the_records_before(tmp_path: Path, alpaca: list[dict],
                                                                     suffix: str) -> None:
    import lzma

    rows = [{**r, "id": f"{r['id']}-{i}", "output": f"{r['output']} ({i})"} for i, r in enumerate(alpaca * 40)]
    if suffix.startswith(".json."):
        text = "[\n" + ",\n".join(json.dumps(r) for r in rows) + "\n]"
    elif suffix.startswith(".jsonl"):
        text = "".join(_line(r) for r in rows)
    else:
        out = io.StringIO()
        csv.writer(out).writerows([["instruction", "input", "output"],
                                   *([r["instruction"], r["input"], r["output"]] for r in rows)])
        text = out.getvalue()
    data = (gzip.compress if suffix.endswith(".gz") else lzma.compress)(text.encode("utf-8"))
    path = tmp_path / f"cut{suffix}"
    path.write_bytes(data[: len(data) // 2])
    recs, rejs = _records(path)
    assert 0 < len(recs) < len(rows)
    assert [r["output"] for r in recs] == [r["output"] for r in rows[: len(recs)]]
    assert len(rejs) == 1
    assert "(EOFError: Compressed file ended before the end-of-stream marker was reached)" in rejs[0].error
    assert rejs[0].error.endswith("the rest of the file is unreadable")


def test_gzip_with_a_bad_checksum_accounts_for_every_line(tmp_path: Path, alpaca: list[dict]) -> None:
    data = bytearray(_gzip_jsonl(alpaca))
    data[-8] ^= 0xFF  # the CRC32 in the trailer: every line decompresses, then the check fails
    path = tmp_path / "crc.jsonl.gz"
    path.write_bytes(bytes(data))
    recs, rejs = _records(path)
    assert len(recs) == len(alpaca)
    assert [(r.source_line, r.error.split(" (")[0]) for r in rejs] == [
        (len(alpaca) + 1, f"unreadable data after line {len(alpaca)}")]
    assert "BadGzipFile" in rejs[0].error


def test_a_gz_file_that_is_not_gzip_is_an_input_error(tmp_path: Path, alpaca: list[dict]) -> None:
    path = tmp_path / "plain.jsonl.gz"
    path.write_text(_line(alpaca[0]), encoding="utf-8")
    with pytest.raises(InputError, match="Not a gzipped file") as exc:
        ingest([str(path)], tmp_path / "work")
    assert str(path) in str(exc.value)


def test_parquet_row_group_with_a_corrupt_page_is_one_rejection(tmp_path: Path, alpaca: list[dict]) -> None:
    path = tmp_path / "damaged.parquet"
    rows = [{k: r[k] for k in ("instruction", "input", "output")} for r in (alpaca * 3)[:30]]
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=10, compression="none", use_dictionary=False)
    offset = pq.ParquetFile(path).metadata.row_group(1).column(2).data_page_offset
    data = bytearray(path.read_bytes())
    data[offset : offset + 16] = b"\xff" * 16  # the page header of row group 1's "output" column
    path.write_bytes(bytes(data))
    recs, rejs = _records(path)
    assert [r["source_line"] for r in recs] == [*range(1, 11), *range(21, 31)]
    assert [r.source_line for r in rejs] == [11]
    assert rejs[0].error.startswith("unreadable data after row 10 (OSError")
    assert rejs[0].error.endswith("the rest of row group 1 (rows 11-20) is unreadable")


@pytest.mark.parametrize("writer", ["stream", "file"])
def test_arrow_batch_with_damaged_buffers_is_rejected_not_crashed(tmp_path: Path, alpaca: list[dict],
                                                                  writer: str) -> None:
    rows = [{k: r[k] for k in ("instruction", "input", "output")} for r in alpaca * 5]
    table = pa.Table.from_pylist(rows)
    path = tmp_path / f"damaged-{writer}.arrow"
    with (pa.ipc.new_stream if writer == "stream" else pa.ipc.new_file)(path, table.schema) as out:
        for batch in table.to_batches(max_chunksize=25):
            out.write_batch(batch)
    data = bytearray(path.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = b"\xff" * 64  # was: SystemError from the conversion
    path.write_bytes(bytes(data))
    recs, rejs = _records(path)
    assert len(rejs) == 1
    assert [r["source_line"] for r in recs] == list(range(1, rejs[0].source_line))
    assert rejs[0].error.startswith(f"unreadable data after row {len(recs)} (")
    assert rejs[0].error.endswith("the rest of the file is unreadable")


def test_truncated_parquet_is_an_input_error_naming_the_file(tmp_path: Path, alpaca: list[dict]) -> None:
    path = tmp_path / "cut.parquet"
    pq.write_table(pa.Table.from_pylist(alpaca[:10]), path)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(InputError, match="not a readable Parquet file") as exc:
        ingest([str(path)], tmp_path / "work")
    assert str(path) in str(exc.value)


# --------------------------------------------------------------------------------------------------
# 4. Special files are refused at once


@pytest.mark.timeout(10)
def test_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.jsonl"
    os.mkfifo(fifo)  # nobody writes to it: opening it for reading would block forever
    with pytest.raises(InputError, match=r"is a FIFO \(named pipe\), not a regular file") as exc:
        ingest([str(fifo)], tmp_path / "work")
    assert str(fifo) in str(exc.value)


@pytest.mark.timeout(10)
@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_endless_device_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="/dev/zero: is a character device, not a regular file"):
        ingest(["/dev/zero"], tmp_path / "work")
    with pytest.raises(InputError, match="character device"):
        _records("/dev/zero", InputOptions(container="jsonl"))


# --------------------------------------------------------------------------------------------------
# 5. Detection does not hinge on the first record or a byte order mark


def test_first_record_missing_output_does_not_refuse_the_file(tmp_path: Path, alpaca: list[dict]) -> None:
    first = {k: v for k, v in alpaca[0].items() if k != "output"}
    path = tmp_path / "first.jsonl"
    path.write_text(_line(first) + "".join(_line(r) for r in alpaca[1:5]), encoding="utf-8")
    recs, rejs = _records(path)
    assert len(recs) == 4
    assert [(r.source_line, r.error) for r in rejs] == [(1, "missing required field 'output'")]


def test_layout_is_the_one_most_of_the_first_records_fit(tmp_path: Path, alpaca: list[dict]) -> None:
    dolly = [{"instruction": r["instruction"], "context": r["input"], "response": r["output"]} for r in alpaca[:5]]
    path = tmp_path / "mixed.jsonl"
    path.write_text(_line(alpaca[0]) + "".join(_line(r) for r in dolly), encoding="utf-8")
    recs, rejs = _records(path)
    assert [r["output"] for r in recs] == [r["output"] for r in alpaca[:5]]
    assert [(r.source_line, r.error) for r in rejs] == [(1, "missing required field 'response'")]


def test_no_record_fits_a_layout_is_still_an_input_error(tmp_path: Path) -> None:
    path = tmp_path / "odd.jsonl"
    path.write_text('{"text": "a"}\n{"text": "b"}\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"none of the first 2 records fits a layout"):
        _records(path)


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv"])
def test_utf8_byte_order_mark_costs_no_record(tmp_path: Path, alpaca: list[dict], suffix: str) -> None:
    if suffix == ".jsonl":
        text = "".join(_line(r) for r in alpaca[:3])
    elif suffix == ".json":
        text = json.dumps(alpaca[:3])
    else:
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["instruction", "input", "output"])
        writer.writerows([r["instruction"], r["input"], r["output"]] for r in alpaca[:3])
        text = out.getvalue()
    path = tmp_path / f"bom{suffix}"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    recs, rejs = _records(path)
    assert rejs == []
    assert [r["instruction"] for r in recs] == [r["instruction"] for r in alpaca[:3]]


def test_utf16_text_is_an_input_error(tmp_path: Path, alpaca: list[dict]) -> None:
    path = tmp_path / "wide.jsonl"
    path.write_bytes(_line(alpaca[0]).encode("utf-16"))
    with pytest.raises(InputError, match="UTF-16 or UTF-32 encoded"):
        _records(path)


def test_damaged_first_line_of_a_jsonl_file_costs_only_that_line(tmp_path: Path, alpaca: list[dict]) -> None:
    path = tmp_path / "head.jsonl"
    path.write_text("garbage\n" + "".join(_line(r) for r in alpaca[:3]), encoding="utf-8")
    recs, rejs = _records(path)
    assert len(recs) == 3
    assert [r.source_line for r in rejs] == [1]


def test_csv_row_of_spaces_is_rejected_not_skipped(tmp_path: Path) -> None:
    path = tmp_path / "spaces.csv"
    path.write_text("instruction,input,output\na,,b\n   \n\nc,,d\n", encoding="utf-8")
    recs, rejs = _records(path)
    assert [r["instruction"] for r in recs] == ["a", "c"]
    assert [(r.source_line, r.error) for r in rejs] == [(3, "row has 1 fields, header has 3")]


# --------------------------------------------------------------------------------------------------
# 6. Properties: InputError, or every line/item accounted for; never another exception

_PROPERTY = settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
_texts = st.text(max_size=40)
_alpaca_records = st.fixed_dictionaries({"instruction": _texts, "output": _texts},
                                        optional={"input": _json_values, "id": _json_values, "task": _json_values})


def _ingest_counts(name: str, data: bytes) -> tuple[int, int] | None:
    """``(records, rejected)`` of ingesting ``data`` as a file called ``name``; ``None`` for an InputError."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(data)
        try:
            records, rejected, _ = _ingest_all(path, Path(tmp) / "work")
        except InputError:
            return None
        return records, rejected


def _jsonl_lines(data: bytes) -> int:
    """Lines a JSON Lines reader must account for: every line but blank ones (a BOM on line 1 is blank)."""
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    if lines:
        lines[0] = lines[0].removeprefix(b"\xef\xbb\xbf")
    return sum(1 for line in lines if line.strip(b" \t\r"))


@_PROPERTY
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_as_jsonl(data: bytes) -> None:
    counts = _ingest_counts("any.jsonl", data)
    if counts is not None and not data.startswith((b"PAR1", b"ARROW1", b"\xff\xff\xff\xff")):  # binary magic
        assert sum(counts) == _jsonl_lines(data)


@_PROPERTY
@given(st.binary(max_size=2000), st.sampled_from(["any.json", "any.csv", "any.tsv", "any.jsonl.gz"]))
def test_arbitrary_bytes_in_other_containers(data: bytes, name: str) -> None:
    _ingest_counts(name, gzip.compress(data)[: len(data) or None] if name.endswith(".gz") else data)


@_PROPERTY
@given(st.lists(_json_values | _alpaca_records, min_size=1, max_size=12), st.booleans(),
       st.sampled_from(["utf-8", "utf-8-sig", "latin-1", "utf-16"]))
def test_arbitrary_json_values_as_jsonl(values: list[Any], ascii_only: bool, encoding: str) -> None:
    text = "".join(json.dumps(v, ensure_ascii=ascii_only) + "\n" for v in values)
    counts = _ingest_counts("values.jsonl", text.encode(encoding, errors="replace"))
    if encoding == "utf-16":
        assert counts is None
    elif counts is not None:
        assert sum(counts) == len(values)


@_PROPERTY
@given(st.lists(_json_values | _alpaca_records, min_size=1, max_size=12), st.booleans(),
       st.sampled_from([None, 0, 2]), st.sampled_from(["utf-8", "utf-8-sig"]))
def test_arbitrary_json_values_as_json_array(values: list[Any], ascii_only: bool, indent: int | None,
                                             encoding: str) -> None:
    text = json.dumps(values, ensure_ascii=ascii_only, indent=indent)
    counts = _ingest_counts("values.json", text.encode(encoding))
    if counts is not None:
        assert sum(counts) == len(values)


@_PROPERTY
@given(st.lists(st.integers(min_value=1, max_value=20_000), min_size=1, max_size=3), st.booleans())
def test_arbitrary_nesting_depths(depths: list[int], as_array: bool) -> None:
    good = json.dumps({"instruction": "i", "output": "o"})
    lines = [good, *(_deep(d) for d in depths)]
    data = ("[" + ",\n".join(lines) + "]") if as_array else "\n".join(lines) + "\n"
    counts = _ingest_counts("deep.json" if as_array else "deep.jsonl", data.encode("utf-8"))
    assert counts is not None
    assert sum(counts) == len(lines)


@_PROPERTY
@given(st.lists(st.tuples(_texts, _texts, _texts), min_size=1, max_size=12),
       st.sampled_from(["utf-8", "utf-8-sig"]), st.sampled_from([",", "\t"]))
def test_arbitrary_text_as_csv(rows: list[tuple[str, str, str]], encoding: str, delimiter: str) -> None:
    out = io.StringIO()
    writer = csv.writer(out, delimiter=delimiter)
    writer.writerow(["instruction", "input", "output"])
    writer.writerows(rows)
    counts = _ingest_counts("rows.tsv" if delimiter == "\t" else "rows.csv", out.getvalue().encode(encoding))
    assert counts is not None
    assert sum(counts) == len(rows)
