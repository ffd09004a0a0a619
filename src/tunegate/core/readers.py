"""Readers: turn Alpaca, Dolly, ShareGPT, OpenAI chat, Super-NaturalInstructions, Parquet and CSV
input into canonical records, streaming, with every unusable record turned into a :class:`Rejection`.

Two layers:

* a *container* reader yields ``(line, object)`` pairs or rejections: JSON Lines, a JSON array, a
  Super-NaturalInstructions task file, Parquet, CSV;
* a *record* normalizer maps one object of a known *record format* (alpaca, dolly, openai, sharegpt)
  onto the canonical fields, or raises :class:`RecordError` with a message saying what is wrong.

``auto`` detects the container from the suffix and the first bytes, and the record format from the
first record's keys. Errors that concern the whole file (missing, empty, unknown format) raise
:class:`~tunegate.exceptions.InputError`; errors that concern one record never do.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from tunegate.core.io import open_binary
from tunegate.core.schema import content_sha256
from tunegate.exceptions import InputError

FORMATS = ("auto", "alpaca", "dolly", "sharegpt", "openai", "superni", "parquet", "csv")
RECORD_FORMATS = ("alpaca", "dolly", "openai", "sharegpt")

_RAW_LIMIT = 2000  # characters of raw input kept in a rejection: enough to see it, bounded for huge lines
_TEXT_CHUNK = 1 << 20
_SURROGATE = re.compile("[\udc80-\udcff]")


class RecordError(ValueError):
    """One record cannot be normalized; the message names the field and the problem."""


@dataclass(frozen=True)
class Rejection:
    source_file: str
    source_line: int
    raw: str
    error: str

    def to_json(self) -> dict[str, Any]:
        return {"source_file": self.source_file, "source_line": self.source_line, "raw": self.raw, "error": self.error}


def _clip(text: str) -> str:
    return text if len(text) <= _RAW_LIMIT else text[:_RAW_LIMIT] + f"... [{len(text) - _RAW_LIMIT} more chars]"


def _raw(obj: Any) -> str:
    try:
        return _clip(json.dumps(obj, ensure_ascii=False, default=str))
    except (TypeError, ValueError):
        return _clip(repr(obj))


# --------------------------------------------------------------------------------------------------
# Record formats


def _text(obj: dict[str, Any], key: str, *, required: bool) -> str:
    if key not in obj or obj[key] is None:
        if required:
            raise RecordError(f"missing required field {key!r}")
        return ""
    value = obj[key]
    if not isinstance(value, str):
        raise RecordError(f"field {key!r} must be a string, got {type(value).__name__}")
    if _SURROGATE.search(value):
        raise RecordError(f"field {key!r} is not valid UTF-8")
    return value


def _opt(obj: dict[str, Any], *keys: str) -> str | None:
    for key in keys:
        value = obj.get(key)
        if value is None or value == "":
            continue
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            text = str(value)
            if _SURROGATE.search(text):
                raise RecordError(f"field {key!r} is not valid UTF-8")
            return text
        raise RecordError(f"field {key!r} must be a string, got {type(value).__name__}")
    return None


_ROLE_ALIASES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "chatgpt": "assistant",
    "assistant": "assistant",
    "bard": "assistant",
    "bing": "assistant",
    "model": "assistant",
    "system": "system",
    "tool": "tool",
    "function": "tool",
}


def _turns(items: Any, field: str, role_key: str, content_key: str) -> list[dict[str, str]]:
    if not isinstance(items, list) or not items:
        raise RecordError(f"field {field!r} must be a non-empty list of turns")
    turns: list[dict[str, str]] = []
    for i, turn in enumerate(items):
        if not isinstance(turn, dict):
            raise RecordError(f"{field}[{i}] must be an object")
        role = turn.get(role_key)
        if not isinstance(role, str) or role.lower() not in _ROLE_ALIASES:
            raise RecordError(f"{field}[{i}].{role_key} is {role!r}, not a known role")
        content = turn.get(content_key)
        if isinstance(content, list):  # OpenAI content parts: keep the text parts
            parts = [p.get("text") for p in content if isinstance(p, dict) and p.get("type") == "text"]
            if not all(isinstance(p, str) for p in parts):
                raise RecordError(f"{field}[{i}].{content_key} has a text part that is not a string")
            content = "\n".join(str(p) for p in parts)
        if content is None:
            content = ""
        if not isinstance(content, str):
            raise RecordError(f"{field}[{i}].{content_key} must be a string, got {type(content).__name__}")
        if _SURROGATE.search(content):
            raise RecordError(f"{field}[{i}].{content_key} is not valid UTF-8")
        turns.append({"role": _ROLE_ALIASES[role.lower()], "content": content})
    return turns


def _project_chat(turns: list[dict[str, str]]) -> tuple[str, str, str]:
    """(instruction, input, output): the first user turn, the system prompt, the reply to that turn."""
    system = "\n".join(t["content"] for t in turns if t["role"] == "system")
    first_user = next((i for i, t in enumerate(turns) if t["role"] == "user"), None)
    if first_user is None:
        raise RecordError("conversation has no user turn")
    reply = next((t["content"] for t in turns[first_user + 1 :] if t["role"] == "assistant"), None)
    if reply is None:
        raise RecordError("conversation has no assistant reply after the first user turn")
    return turns[first_user]["content"], system, reply


def normalize(obj: Any, record_format: str) -> dict[str, Any]:
    """Map one parsed record onto canonical fields (without id/provenance); raise :class:`RecordError`."""
    if not isinstance(obj, dict):
        raise RecordError(f"expected a JSON object, got {type(obj).__name__}")
    messages: list[dict[str, str]] | None = None
    if record_format == "alpaca":
        instruction = _text(obj, "instruction", required=True)
        input_ = _text(obj, "input", required=False)
        output = _text(obj, "output", required=True)
        task = _opt(obj, "task", "category")
    elif record_format == "dolly":
        instruction = _text(obj, "instruction", required=True)
        input_ = _text(obj, "context", required=False)
        output = _text(obj, "response", required=True)
        task = _opt(obj, "category", "task")
    elif record_format == "openai":
        messages = _turns(obj.get("messages"), "messages", "role", "content")
        instruction, input_, output = _project_chat(messages)
        task = _opt(obj, "task", "category")
    elif record_format == "sharegpt":
        messages = _turns(obj.get("conversations"), "conversations", "from", "value")
        instruction, input_, output = _project_chat(messages)
        task = _opt(obj, "task", "category")
    else:  # pragma: no cover - guarded by callers
        raise ValueError(f"unknown record format {record_format!r}")
    return {
        "id": _opt(obj, "id"),
        "instruction": instruction,
        "input": input_,
        "output": output,
        "task": task,
        "source": _opt(obj, "source"),
        "contributor": _opt(obj, "contributor", "author", "annotator"),
        "messages": messages,
    }


def detect_record_format(keys: Iterable[str]) -> str | None:
    keys = set(keys)
    if "messages" in keys:
        return "openai"
    if "conversations" in keys:
        return "sharegpt"
    if "response" in keys and "instruction" in keys:
        return "dolly"
    if "instruction" in keys and "output" in keys:
        return "alpaca"
    return None


# --------------------------------------------------------------------------------------------------
# Containers


def _iter_jsonl(f: io.BufferedIOBase | Any, path: str) -> Iterator[tuple[int, Any] | Rejection]:
    for lineno, raw in enumerate(f, 1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            text = raw.decode("utf-8", "backslashreplace").rstrip("\r\n")
            yield Rejection(path, lineno, _clip(text), f"invalid UTF-8 at byte {exc.start}")
            continue
        if not line.strip():
            continue
        try:
            yield lineno, json.loads(line.rstrip("\r\n"))
        except json.JSONDecodeError as exc:
            yield Rejection(path, lineno, _clip(line.rstrip("\r\n")), f"invalid JSON: {exc.msg} (column {exc.colno})")


class _JsonArrayStream:
    """Stream the elements of a top-level JSON array with their starting line numbers.

    Holds one element (plus a read-ahead block) in memory, so a multi-GB Alpaca-style JSON file
    streams in bounded memory. Undecodable bytes become lone surrogates and are rejected per record.
    """

    def __init__(self, f: Any, path: str) -> None:
        self._reader = codecs.getreader("utf-8")(f, "surrogateescape")
        self._path = path
        self._buf = ""
        self._pos = 0
        self._line = 1
        self._eof = False
        self._decoder = json.JSONDecoder()

    def _fill(self) -> bool:
        if self._eof:
            return False
        block = self._reader.read(_TEXT_CHUNK)
        if not block:
            self._eof = True
            return False
        self._line += self._buf.count("\n", 0, self._pos)
        self._buf = self._buf[self._pos :] + block
        self._pos = 0
        return True

    def _skip_ws(self) -> str:
        while True:
            while self._pos < len(self._buf) and self._buf[self._pos] in " \t\r\n\ufeff":
                self._pos += 1
            if self._pos < len(self._buf):
                return self._buf[self._pos]
            if not self._fill():
                return ""

    def _line_at(self, pos: int) -> int:
        return self._line + self._buf.count("\n", 0, pos)

    def __iter__(self) -> Iterator[tuple[int, Any] | Rejection]:
        if self._skip_ws() != "[":
            raise InputError("expected a JSON array", path=self._path, line=self._line_at(self._pos))
        self._pos += 1
        expect_value = True
        count = 0
        while True:
            ch = self._skip_ws()
            if ch == "]" and (not expect_value or count == 0):
                return
            if ch == "" or (not expect_value and ch != ","):
                line = self._line_at(self._pos)
                rest = self._rest()
                yield Rejection(self._path, line, _clip(rest), "invalid JSON array: expected ',' or ']'"
                                + ("" if rest else " before end of file") + "; the rest of the file is unreadable")
                return
            if not expect_value:
                self._pos += 1
                expect_value = True
                continue
            start_line = self._line_at(self._pos)
            while True:
                try:
                    obj, end = self._decoder.raw_decode(self._buf, self._pos)
                    break
                except json.JSONDecodeError as exc:
                    if self._fill():
                        continue
                    err_line = self._line + self._buf.count("\n", 0, exc.pos)
                    yield Rejection(self._path, start_line, _clip(self._rest()),
                                    f"invalid JSON at line {err_line}: {exc.msg}; the rest of the file is unreadable")
                    return
            raw_text = self._buf[self._pos : end]
            self._pos = end
            expect_value = False
            count += 1
            if _SURROGATE.search(raw_text):
                yield Rejection(self._path, start_line, _clip(raw_text.encode("utf-8", "surrogateescape").decode(
                    "utf-8", "backslashreplace")), "invalid UTF-8")
                continue
            yield start_line, obj

    def _rest(self) -> str:
        parts = [self._buf[self._pos :]]
        size = len(parts[0])
        while size < _RAW_LIMIT and not self._eof and self._fill():
            parts = [self._buf[self._pos :]]
            size = len(parts[0])
        return "".join(parts).strip()


def _iter_superni(f: Any, path: str) -> Iterator[tuple[int, Any] | Rejection]:
    """A Super-NaturalInstructions task file: ``Definition`` + ``Instances`` (one object per file)."""
    data = f.read()
    try:
        doc = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise InputError(f"invalid UTF-8 at byte {exc.start}", path=path) from exc
    except json.JSONDecodeError as exc:
        raise InputError(f"invalid JSON: {exc.msg} at column {exc.colno}", path=path, line=exc.lineno) from exc
    if not isinstance(doc, dict) or "Instances" not in doc or "Definition" not in doc:
        raise InputError("not a Super-NaturalInstructions task file (needs 'Definition' and 'Instances')", path=path)
    definition = doc["Definition"]
    if isinstance(definition, list):
        definition = "\n".join(str(d) for d in definition)
    if not isinstance(definition, str):
        raise InputError("'Definition' must be a string or a list of strings", path=path)
    instances = doc["Instances"]
    if not isinstance(instances, list):
        raise InputError("'Instances' must be a list", path=path)
    task = _task_name(path)
    for position, inst in enumerate(instances, 1):
        if not isinstance(inst, dict):
            yield Rejection(path, position, _raw(inst), "instance must be an object")
            continue
        outputs = inst.get("output")
        if isinstance(outputs, list):
            if not outputs:
                yield Rejection(path, position, _raw(inst), "instance has an empty 'output' list")
                continue
            output = outputs[0]
        else:
            output = outputs
        yield position, {
            "id": inst.get("id"),
            "instruction": definition,
            "input": inst.get("input"),
            "output": output,
            "task": task,
            "source": "superni",
        }


def _task_name(path: str) -> str:
    name = path.rstrip("/").rsplit("/", 1)[-1]
    for suffix in (".gz", ".json"):
        name = name.removesuffix(suffix)
    return name


def _iter_parquet(f: Any, path: str, batch_size: int) -> Iterator[tuple[int, Any] | Rejection]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(f)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"not a readable Parquet file: {exc}", path=path) from exc
    position = 0
    for batch in pf.iter_batches(batch_size=batch_size):
        for row in batch.to_pylist():
            position += 1
            yield position, row


def _iter_csv(f: Any, path: str, delimiter: str) -> Iterator[tuple[int, Any] | Rejection]:
    csv.field_size_limit(1 << 28)
    text = io.TextIOWrapper(f, encoding="utf-8", errors="surrogateescape", newline="")
    reader = csv.reader(text, delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        return
    header = [h.strip().lstrip("\ufeff") for h in header]
    start = reader.line_num + 1
    while True:
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield Rejection(path, start, "", f"invalid CSV: {exc}")
            start = reader.line_num + 1
            continue
        line, start = start, reader.line_num + 1
        if not values or (len(values) == 1 and not values[0].strip()):
            continue
        if len(values) != len(header):
            yield Rejection(path, line, _clip(delimiter.join(values)),
                            f"row has {len(values)} fields, header has {len(header)}")
            continue
        row = dict(zip(header, values, strict=True))
        if "messages" in row or "conversations" in row:  # chat columns hold JSON text in CSV
            key = "messages" if "messages" in row else "conversations"
            try:
                row[key] = json.loads(row[key])
            except json.JSONDecodeError as exc:
                yield Rejection(path, line, _clip(delimiter.join(values)), f"column {key!r} is not JSON: {exc.msg}")
                continue
        yield line, row


# --------------------------------------------------------------------------------------------------
# Detection and the public entry point


def _container_of(path: str, head: bytes, fmt: str) -> str:
    name = path.lower()
    for comp in (".gz", ".bz2", ".xz", ".zst"):
        name = name.removesuffix(comp)
    if fmt == "parquet" or (fmt == "auto" and name.endswith(".parquet")):
        return "parquet"
    if fmt == "csv" or (fmt == "auto" and name.endswith((".csv", ".tsv"))):
        return "tsv" if name.endswith(".tsv") else "csv"
    if fmt == "superni":
        return "superni"
    stripped = head.lstrip(b" \t\r\n\xef\xbb\xbf")
    if not stripped:
        raise InputError("file is empty", path=path)
    if stripped.startswith(b"["):
        return "json_array"
    if stripped.startswith(b"{"):
        first_line = stripped.split(b"\n", 1)[0]
        try:
            json.loads(first_line)
        except ValueError:
            # Not one object per line: a pretty-printed document. The only such format we know is a
            # Super-NaturalInstructions task file; anything else is read as JSON Lines and its lines
            # are rejected one by one with their line numbers.
            if b'"Instances"' in head or b'"Definition"' in head:
                return "superni"
        return "jsonl"
    if name.endswith(".parquet") or head.startswith(b"PAR1"):
        return "parquet"
    raise InputError(f"unknown format (starts with {stripped[:16]!r}); pass --format", path=path)


_SNIFF = 64 * 1024


def read_file(path: str, fmt: str = "auto", *, batch_size: int = 10_000) -> Iterator[dict[str, Any] | Rejection]:
    """Yield canonical records (dicts with every canonical column) and rejections for one file, in order."""
    if fmt not in FORMATS:
        raise InputError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}", path=path)
    with open_binary(path) as f:
        head = f.peek(_SNIFF)[:_SNIFF] if hasattr(f, "peek") else b""
        if not head:
            buffered = io.BufferedReader(f, buffer_size=_SNIFF)  # type: ignore[arg-type,type-var]
            head = buffered.peek(_SNIFF)[:_SNIFF]
            f = buffered
        container = _container_of(path, head, fmt)
        if container in ("parquet", "csv", "tsv") and not head and fmt == "auto":
            raise InputError("file is empty", path=path)
        record_format = fmt if fmt in RECORD_FORMATS else None
        if container == "jsonl":
            items: Iterator[tuple[int, Any] | Rejection] = _iter_jsonl(f, path)
        elif container == "json_array":
            items = iter(_JsonArrayStream(f, path))
        elif container == "superni":
            items = _iter_superni(f, path)
            record_format = "alpaca"
        elif container == "parquet":
            items = _iter_parquet(f, path, batch_size)
        else:
            if not head.strip():
                raise InputError("file is empty", path=path)
            items = _iter_csv(f, path, "\t" if container == "tsv" else ",")
        yield from _normalize_stream(items, path, record_format)


def _normalize_stream(items: Iterator[tuple[int, Any] | Rejection], path: str,
                      record_format: str | None) -> Iterator[dict[str, Any] | Rejection]:
    seen_any = False
    for item in items:
        seen_any = True
        if isinstance(item, Rejection):
            yield item
            continue
        line, obj = item
        if record_format is None:
            if not isinstance(obj, dict):
                yield Rejection(path, line, _raw(obj), f"expected a JSON object, got {type(obj).__name__}")
                continue
            record_format = detect_record_format(obj.keys())
            if record_format is None:
                raise InputError(
                    f"unknown record format (first record has keys {sorted(obj)[:8]}); expected alpaca "
                    "(instruction/output), dolly (instruction/response), openai (messages) or sharegpt "
                    "(conversations); pass --format", path=path, line=line)
        try:
            rec = normalize(obj, record_format)
        except RecordError as exc:
            yield Rejection(path, line, _raw(obj), str(exc))
            continue
        rec["content_sha256"] = content_sha256(rec["instruction"], rec["input"], rec["output"], rec["messages"])
        rec["source_file"] = path
        rec["source_line"] = line
        yield rec
    if not seen_any:
        raise InputError("file holds no records", path=path)
