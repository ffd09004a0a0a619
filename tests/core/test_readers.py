"""Each reader on real-shaped data (tests/data/formats holds the same real SuperNI records in every format)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from tests.conftest import FORMATS
from tunegate.core.ingest import IngestResult, ingest
from tunegate.core.io import expand_inputs, sha256_file
from tunegate.core.readers import CANONICAL_FIELDS, CONTAINERS, LAYOUTS, InputOptions, Rejection, read_file
from tunegate.exceptions import ConfigError, InputError


def _records(path: Path | str, fmt: str = "auto", options: InputOptions | None = None,
             batch_size: int = 10_000) -> tuple[list[dict], list[Rejection]]:
    recs, rejs = [], []
    for item in read_file(str(path), fmt, options=options, batch_size=batch_size):
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


def test_chat_and_optional_field_errors_name_the_turn_or_field(tmp_path: Path) -> None:
    """Damaged copies of real OpenAI-format records: each is rejected naming the turn or field at fault."""
    lines = (FORMATS / "openai.jsonl").read_text(encoding="utf-8").splitlines()[:7]
    recs = [json.loads(line) for line in lines]
    recs[0]["messages"][2]["content"] = 5
    recs[1]["messages"][1]["role"] = "narrator"
    recs[2]["messages"] = recs[2]["messages"][:2]
    recs[3]["task"] = True
    recs[4]["messages"][1]["content"] = [{"type": "text", "text": 7}]
    recs[5]["id"] = 42  # an integer id is kept as text
    recs[6]["messages"][1]["content"] = [{"type": "text", "text": "part one"}, {"type": "image_url"},
                                         {"type": "text", "text": "part two"}]
    path = tmp_path / "chat.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs), encoding="utf-8")
    good, rejs = _records(path)
    assert [(r.source_line, r.error) for r in rejs] == [
        (1, "messages[2].content must be a string, got int"),
        (2, "messages[1].role is 'narrator', not a known role"),
        (3, "conversation has no assistant reply after the first user turn"),
        (4, "field 'task' must be a string, got bool"),
        (5, "messages[1].content has a text part that is not a string"),
    ]
    assert [(r["source_line"], r["id"], r["instruction"]) for r in good] == [
        (6, "42", recs[5]["messages"][1]["content"]), (7, recs[6]["id"], "part one\npart two")]


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


# --------------------------------------------------------------------------------------------------
# Hugging Face datasets folders, Arrow files, column maps, layouts


def _assert_alpaca(recs: list[dict], reference: list[dict]) -> None:
    assert [(r["id"], r["instruction"], r["input"], r["output"]) for r in recs] == [
        (r["id"], r["instruction"], r["input"], r["output"]) for r in reference]


def test_save_to_disk_folder_reads_like_the_json_it_came_from(tmp_path: Path, reference: list[dict]) -> None:
    import datasets

    folder = tmp_path / "nightly" / "ds"
    datasets.Dataset.from_list(reference).save_to_disk(str(folder))
    recs, rejs = _records(folder, batch_size=7)  # smaller than a record batch: sliced, nothing lost
    assert rejs == []
    _assert_alpaca(recs, reference)
    assert {r["source_file"] for r in recs} == {str(folder / "data-00000-of-00001.arrow")}
    assert [r["source_line"] for r in recs] == list(range(1, 21))
    assert {r["source"] for r in recs} == {None}  # a plain Dataset has no split to name
    # a directory holding the folder expands to it (one input), and ingest hashes its Arrow bytes
    assert expand_inputs([str(tmp_path / "nightly")]) == [str(folder)]
    result = ingest([str(tmp_path / "nightly")], tmp_path / "work")
    assert (result.records, result.rejected) == (20, 0)
    assert IngestResult.load(tmp_path / "work").inputs[0].sha256 == sha256_file(str(folder))


def test_save_to_disk_of_a_selection_reads_exactly_its_rows(tmp_path: Path, reference: list[dict]) -> None:
    import datasets

    datasets.Dataset.from_list(reference).select([7, 2, 5]).save_to_disk(str(tmp_path / "sel"))
    recs, _ = _records(tmp_path / "sel")
    assert [r["id"] for r in recs] == [reference[i]["id"] for i in (7, 2, 5)]


def test_dataset_dict_folder_reads_every_split_and_names_it(tmp_path: Path, reference: list[dict]) -> None:
    import datasets

    folder = tmp_path / "dd"
    datasets.DatasetDict({"train": datasets.Dataset.from_list(reference[:15]),
                          "test": datasets.Dataset.from_list(reference[15:])}).save_to_disk(str(folder))
    recs, rejs = _records(folder)
    assert rejs == []
    _assert_alpaca(recs, reference)  # splits in the folder's order: train, then test
    assert [r["source"] for r in recs] == ["train"] * 15 + ["test"] * 5
    assert recs[15]["source_file"] == str(folder / "test" / "data-00000-of-00001.arrow")
    assert recs[15]["source_line"] == 1

    recs, _ = _records(folder, options=InputOptions(splits=("test",)))
    _assert_alpaca(recs, reference[15:])
    with pytest.raises(InputError, match=r"no split\(s\) \['validation'\].*\['train', 'test'\]"):
        _records(folder, options=InputOptions(splits=("validation",)))


def test_split_name_does_not_replace_a_records_own_source(tmp_path: Path, reference: list[dict]) -> None:
    import datasets

    rows = [{**r, "source": "superni"} for r in reference[:3]]
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows)}).save_to_disk(str(tmp_path / "dd"))
    recs, _ = _records(tmp_path / "dd")
    assert [r["source"] for r in recs] == ["superni"] * 3


def test_a_plain_directory_is_not_a_dataset(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="not a datasets save_to_disk folder"):
        _records(tmp_path / "empty")


@pytest.mark.parametrize("ipc", ["stream", "file"])
def test_arrow_ipc_stream_and_file_formats(tmp_path: Path, reference: list[dict], ipc: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(FORMATS / "alpaca.parquet")
    path = tmp_path / f"alpaca-{ipc}.arrow"
    opener = pa.ipc.new_stream if ipc == "stream" else pa.ipc.new_file
    with opener(str(path), table.schema) as writer:
        for batch in table.to_batches(max_chunksize=8):  # several record batches
            writer.write_batch(batch)
    recs, rejs = _records(path)
    assert rejs == []
    _assert_alpaca(recs, reference)
    renamed = tmp_path / f"alpaca-{ipc}.bin"  # no suffix: detected from the first bytes
    path.rename(renamed)
    assert len(_records(renamed)[0]) == 20


def test_truncated_arrow_stream_keeps_what_precedes_and_rejects_the_rest(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(FORMATS / "alpaca.parquet")
    path = tmp_path / "cut.arrow"
    with pa.ipc.new_stream(str(path), table.schema) as writer:
        for batch in table.to_batches(max_chunksize=10):
            writer.write_batch(batch)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 200])  # damage the second batch
    recs, rejs = _records(path)
    assert len(recs) == 10
    assert len(rejs) == 1 and rejs[0].source_line == 11 and "rest of the file is unreadable" in rejs[0].error


@pytest.fixture
def prompt_completion(tmp_path: Path, reference: list[dict]) -> Path:
    """The reference records as a prompt/completion Parquet file (the shape of many hub datasets)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"uid": r["id"], "prompt": r["instruction"], "context": r["input"], "completion": r["output"]}
            for r in reference]
    path = tmp_path / "pc.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def test_column_map_reads_prompt_completion_parquet(prompt_completion: Path, reference: list[dict]) -> None:
    with pytest.raises(InputError, match=r"unknown record format.*--column"):
        _records(prompt_completion)
    options = InputOptions.from_mapping({"columns": ["prompt=instruction", "completion=output", "context=input",
                                                     "uid=id"]})
    recs, rejs = _records(prompt_completion, options=options)
    assert rejs == []
    _assert_alpaca(recs, reference)


def test_record_without_a_mapped_column_is_rejected_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "pc.jsonl"
    path.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "c"}\n', encoding="utf-8")
    options = InputOptions(columns={"prompt": "instruction", "completion": "output"})
    recs, rejs = _records(path, options=options)
    assert [r["output"] for r in recs] == ["b"]
    assert [(r.source_line, r.error) for r in rejs] == [
        (2, "missing required field 'output' (mapped from column 'completion')")]


def test_layout_detection_versus_an_explicit_layout() -> None:
    recs, _ = _records(FORMATS / "dolly.jsonl")  # auto: instruction + response -> dolly
    assert len(recs) == 20 and recs[0]["task"] == "task363_sst2_polarity_classification"
    # forced alpaca: every record lacks 'output' and is rejected with its line, none dropped
    recs, rejs = _records(FORMATS / "dolly.jsonl", options=InputOptions(layout="alpaca"))
    assert recs == [] and len(rejs) == 20
    assert {r.error for r in rejs} == {"missing required field 'output'"}
    assert [r.source_line for r in rejs] == list(range(1, 21))


def test_container_is_chosen_apart_from_the_suffix(tmp_path: Path) -> None:
    path = tmp_path / "batch.txt"
    path.write_bytes((FORMATS / "alpaca.csv").read_bytes())
    with pytest.raises(InputError, match="unknown format"):
        _records(path)
    recs, rejs = _records(path, options=InputOptions(container="csv"))
    assert len(recs) == 20 and rejs == []


def test_canonical_output_reads_back_with_its_conversation(tmp_path: Path) -> None:
    result = ingest([str(FORMATS / "openai.jsonl")], tmp_path / "work")
    canonical = tmp_path / "work" / "canonical.parquet"
    recs, rejs = _records(canonical)  # auto-detected as the canonical layout (content_sha256 column)
    assert rejs == [] and len(recs) == result.records == 20
    first, _ = _records(FORMATS / "openai.jsonl")
    assert [r["content_sha256"] for r in recs] == [r["content_sha256"] for r in first]
    assert recs[0]["messages"] == first[0]["messages"]


def test_old_format_names_map_onto_container_and_layout() -> None:
    assert InputOptions.from_format("superni") == InputOptions(container="json", layout="superni")
    assert InputOptions.from_format("csv") == InputOptions(container="csv")
    assert InputOptions.from_format("dolly") == InputOptions(layout="dolly")
    recs, _ = _records(FORMATS / "task363_sst2_polarity_classification.json", "superni")
    assert len(recs) == 10
    with pytest.raises(ConfigError, match="either fmt='csv' or options"):
        _records(FORMATS / "alpaca.csv", "csv", options=InputOptions())


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"format": "csv"}, "unknown input settings ['format']; allowed: ['container', 'layout', 'columns', 'splits']"),
        ({"container": "xlsx"}, "input container 'xlsx' is unknown; allowed: " + ", ".join(CONTAINERS)),
        ({"layout": "llama"}, "input layout 'llama' is unknown; allowed: " + ", ".join(LAYOUTS)),
        ({"columns": {"prompt": "question"}},
         "'prompt' maps onto 'question', which is not a canonical field; allowed: " + ", ".join(CANONICAL_FIELDS)),
        ({"columns": {"prompt": "instruction", "question": "instruction"}},
         "'prompt' and 'question' both map onto 'instruction'"),
        ({"columns": ["prompt"]}, "input column map 'prompt' is not 'SRC=DST'"),
        ({"columns": {"q": "instruction"}, "layout": "dolly"}, "which layout 'dolly' does not read"),
        ({"layout": "superni", "container": "parquet"}, "reads Super-NaturalInstructions task files"),
        ({"splits": "train"}, "input splits must be a list of split names"),
    ],
)
def test_bad_input_options_name_the_key_and_what_is_allowed(data: dict, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        InputOptions.from_mapping(data, source="policy.yaml")
    assert str(exc.value).startswith("policy.yaml: ") and message in str(exc.value)


def test_input_options_are_frozen_and_round_trip() -> None:
    options = InputOptions.from_mapping({"container": "parquet", "columns": {"prompt": "instruction"},
                                         "splits": ["train"]})
    assert InputOptions.from_mapping(options.to_json()) == options
    assert InputOptions.from_mapping({"columns": None, "splits": None}) == InputOptions()  # empty YAML keys
    with pytest.raises(TypeError):
        options.columns["x"] = "output"  # type: ignore[index]
