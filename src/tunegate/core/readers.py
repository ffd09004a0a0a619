"""Readers: turn instruction-tuning data, as users hold it, into canonical records, streaming, with every
unusable record turned into a :class:`Rejection`.

Three independent choices, held in one :class:`InputOptions`:

* the *container* (how records are stored): ``jsonl``, ``json`` (an array, or a Super-NaturalInstructions
  task file), ``parquet``, ``csv``, ``tsv``, ``arrow`` (Arrow IPC, stream or file format) or ``hf-disk``
  (a ``datasets`` ``save_to_disk`` folder, a ``Dataset`` or a ``DatasetDict``);
* the *layout* (which fields a record has): ``alpaca``, ``dolly``, ``openai``, ``sharegpt``, ``superni``
  or ``canonical`` (tunegate's own output);
* a *column map* renaming the user's columns onto canonical fields (``prompt`` -> ``instruction``), applied
  before the layout reads a record.

``auto`` detects the container from the suffix and the first bytes, and the layout from the first
record's keys (after the column map). Errors that concern the whole file (missing, empty, unknown
format) raise :class:`~tunegate.exceptions.InputError`; errors that concern one record never do.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from tunegate.core.io import DEFAULT_STORAGE, Storage, hf_disk_kind, hf_disk_shards, open_binary
from tunegate.core.schema import content_sha256
from tunegate.exceptions import ConfigError, InputError

#: The old single ``fmt`` names (CLI ``--format``, ``IngestOperator(fmt=)``), kept working.
FORMATS = ("auto", "alpaca", "dolly", "sharegpt", "openai", "superni", "parquet", "csv")
CONTAINERS = ("auto", "jsonl", "json", "parquet", "csv", "tsv", "arrow", "hf-disk")
LAYOUTS = ("auto", "alpaca", "dolly", "sharegpt", "openai", "superni", "canonical")
RECORD_FORMATS = ("alpaca", "dolly", "openai", "sharegpt", "canonical")  # layouts that map one object
#: Fields a column map may target: the input fields of the canonical schema.
CANONICAL_FIELDS = ("id", "instruction", "input", "output", "task", "source", "contributor", "messages")
#: Layouts that read canonical field names, so a column map means something to them.
_MAPPABLE_LAYOUTS = ("auto", "alpaca", "canonical", "openai")
_FORMAT_TO_OPTIONS = {
    "auto": ("auto", "auto"),
    "alpaca": ("auto", "alpaca"),
    "dolly": ("auto", "dolly"),
    "sharegpt": ("auto", "sharegpt"),
    "openai": ("auto", "openai"),
    "superni": ("json", "superni"),
    "parquet": ("parquet", "auto"),
    "csv": ("csv", "auto"),
}

_RAW_LIMIT = 2000  # characters of raw input kept in a rejection: enough to see it, bounded for huge lines
_TEXT_CHUNK = 1 << 20
_SURROGATE = re.compile("[\udc80-\udcff]")


@dataclass(frozen=True)
class InputOptions:
    """How to read the inputs: container, record layout, column map and ``DatasetDict`` splits.

    The policy file's ``input:`` section, the CLI and the operators build this same object.
    """

    #: ``auto`` or one of :data:`CONTAINERS`.
    container: str = "auto"
    #: ``auto`` or one of :data:`LAYOUTS`.
    layout: str = "auto"
    #: ``{source column: canonical field}``, e.g. ``{"prompt": "instruction", "completion": "output"}``.
    #: A mapped column replaces a field of the same name; a record without the source column keeps its
    #: own field of that name.
    columns: Mapping[str, str] = field(default_factory=dict)
    #: Splits of a ``DatasetDict`` folder to read; empty means all of them, in the folder's order.
    splits: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.container not in CONTAINERS:
            raise ConfigError(f"input container {self.container!r} is unknown; allowed: {', '.join(CONTAINERS)}")
        if self.layout not in LAYOUTS:
            raise ConfigError(f"input layout {self.layout!r} is unknown; allowed: {', '.join(LAYOUTS)}")
        if self.layout == "superni" and self.container not in ("auto", "json"):
            raise ConfigError(f"input layout 'superni' reads Super-NaturalInstructions task files, a 'json' "
                              f"container, not {self.container!r}")
        if not isinstance(self.columns, Mapping):
            raise ConfigError(f"input columns must be a mapping of source column to canonical field, "
                              f"got {self.columns!r}")
        targets: dict[str, str] = {}
        for src, dst in self.columns.items():
            if not isinstance(src, str) or not src:
                raise ConfigError(f"input columns: source column {src!r} must be a non-empty string")
            if dst not in CANONICAL_FIELDS:
                raise ConfigError(f"input columns: {src!r} maps onto {dst!r}, which is not a canonical field; "
                                  f"allowed: {', '.join(CANONICAL_FIELDS)}")
            if dst in targets:
                raise ConfigError(f"input columns: {targets[dst]!r} and {src!r} both map onto {dst!r}")
            targets[dst] = src
        if self.columns and self.layout not in _MAPPABLE_LAYOUTS:
            raise ConfigError(f"input columns rename onto canonical fields, which layout {self.layout!r} does "
                              f"not read; use layout {', '.join(repr(x) for x in _MAPPABLE_LAYOUTS)}")
        object.__setattr__(self, "columns", MappingProxyType(dict(self.columns)))
        splits = self.splits
        if isinstance(splits, str) or not isinstance(splits, Sequence) or not all(
                isinstance(x, str) and x for x in splits):
            raise ConfigError(f"input splits must be a list of split names, got {splits!r}")
        object.__setattr__(self, "splits", tuple(splits))

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, source: str | None = None) -> InputOptions:
        """Build from a policy file's ``input:`` section (or any mapping); errors name ``source``.

        ``columns`` may be a mapping or a list of ``"SRC=DST"`` strings (the CLI's ``--column``).
        """
        where = f"{source}: " if source else ""
        if not isinstance(data, Mapping):
            raise ConfigError(f"{where}the input section must be a mapping, got {type(data).__name__}")
        known = [f for f in cls.__dataclass_fields__]
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ConfigError(f"{where}unknown input settings {unknown}; allowed: {known}")
        values = {k: v for k, v in data.items() if v is not None}  # an empty YAML key means the default
        if "columns" in values and not isinstance(values["columns"], Mapping):
            values["columns"] = parse_columns(values["columns"], source=source)
        try:
            return cls(**values)
        except ConfigError as exc:
            raise ConfigError(f"{where}{exc}") from None

    @classmethod
    def from_format(cls, fmt: str) -> InputOptions:
        """The options an old ``fmt`` name stands for (``superni`` -> json container + superni layout)."""
        if fmt not in _FORMAT_TO_OPTIONS:
            raise ConfigError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
        container, layout = _FORMAT_TO_OPTIONS[fmt]
        return cls(container=container, layout=layout)

    def to_json(self) -> dict[str, Any]:
        return {"container": self.container, "layout": self.layout, "columns": dict(self.columns),
                "splits": list(self.splits)}


def parse_columns(specs: Any, *, source: str | None = None) -> dict[str, str]:
    """``["prompt=instruction", ...]`` -> ``{"prompt": "instruction", ...}``; a bad entry is a ConfigError."""
    where = f"{source}: " if source else ""
    if isinstance(specs, str) or not isinstance(specs, Sequence):
        raise ConfigError(f"{where}input columns must be a mapping or a list of 'SRC=DST' strings, got {specs!r}")
    out: dict[str, str] = {}
    for spec in specs:
        src, sep, dst = spec.partition("=") if isinstance(spec, str) else ("", "", "")
        if not sep or not src.strip() or not dst.strip():
            raise ConfigError(f"{where}input column map {spec!r} is not 'SRC=DST' (e.g. 'prompt=instruction')")
        if src.strip() in out:
            raise ConfigError(f"{where}input column {src.strip()!r} is mapped twice")
        out[src.strip()] = dst.strip()
    return out


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
    elif record_format == "canonical":  # tunegate's own output: the fields as they are, messages optional
        instruction = _text(obj, "instruction", required=True)
        input_ = _text(obj, "input", required=False)
        output = _text(obj, "output", required=True)
        task = _opt(obj, "task")
        if obj.get("messages") is not None:
            messages = _turns(obj["messages"], "messages", "role", "content")
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
    if {"content_sha256", "instruction", "output"} <= keys:
        return "canonical"
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
    yield from _iter_rows(pf.iter_batches(batch_size=batch_size), path, batch_size)


def _iter_arrow(f: Any, path: str, head: bytes, batch_size: int) -> Iterator[tuple[int, Any] | Rejection]:
    """Arrow IPC: the file format (``ARROW1`` magic) or the stream format that ``datasets`` writes."""
    import pyarrow as pa

    try:
        if head.startswith(b"ARROW1"):
            file_reader = pa.ipc.open_file(f)
            batches: Iterator[Any] = (file_reader.get_batch(i) for i in range(file_reader.num_record_batches))
        else:
            batches = iter(pa.ipc.open_stream(f))
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"not a readable Arrow IPC file or stream: {exc}", path=path) from exc
    yield from _iter_rows(batches, path, batch_size)


def _iter_rows(batches: Iterator[Any], path: str, batch_size: int) -> Iterator[tuple[int, Any] | Rejection]:
    """Rows of Arrow record batches as dicts, ``batch_size`` rows converted at a time (bounded memory).

    Damage part-way through (a truncated file) keeps the rows before it and rejects the rest as one entry.
    """
    import pyarrow as pa

    position = 0
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except (pa.ArrowInvalid, OSError) as exc:
            yield Rejection(path, position + 1, "", f"unreadable Arrow data after row {position}: {exc}; "
                            "the rest of the file is unreadable")
            return
        for offset in range(0, batch.num_rows, batch_size):
            for row in batch.slice(offset, batch_size).to_pylist():
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

_SNIFF = 64 * 1024
_ARROW_STREAM_MARK = b"\xff\xff\xff\xff"  # continuation marker that starts an Arrow IPC stream message


def _strip_compression(path: str) -> str:
    name = path.lower().rstrip("/")
    for comp in (".gz", ".bz2", ".xz", ".zst"):
        name = name.removesuffix(comp)
    return name


def _container_of(path: str, head: bytes, options: InputOptions) -> str:
    """The container to read ``path`` with: a name of :data:`CONTAINERS`, or ``json_array`` / ``superni``."""
    name = _strip_compression(path)
    container = options.container
    if container == "auto":
        for suffix, kind in ((".parquet", "parquet"), (".csv", "csv"), (".tsv", "tsv"), (".arrow", "arrow")):
            if name.endswith(suffix):
                container = kind
    if container == "csv" and name.endswith(".tsv"):  # the old --format csv read .tsv files tab-separated
        return "tsv"
    if options.layout == "superni":
        return "superni"
    if container in ("parquet", "csv", "tsv", "arrow", "jsonl"):
        return container
    stripped = head.lstrip(b" \t\r\n\xef\xbb\xbf")
    if container == "auto" and head.startswith(b"PAR1"):
        return "parquet"
    if container == "auto" and head.startswith((b"ARROW1", _ARROW_STREAM_MARK)):
        return "arrow"
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
        return "superni" if container == "json" else "jsonl"
    raise InputError(f"unknown format (starts with {stripped[:16]!r}); pass a container (--container) "
                     f"or --format", path=path)


def _is_folder(url: str, options: InputOptions, storage: Storage) -> tuple[Any, str] | None:
    """``(fs, path)`` when ``url`` is a ``save_to_disk`` folder to read as ``hf-disk``, else ``None``."""
    if options.container not in ("auto", "hf-disk"):
        return None
    if options.container == "auto" and _strip_compression(url).endswith(
            (".json", ".jsonl", ".ndjson", ".parquet", ".csv", ".tsv", ".arrow")):
        return None  # a data file: spare object storage the extra round trip
    fs, path = storage.resolve(url)
    if fs.isdir(path):
        if hf_disk_kind(fs, path) is None:
            raise InputError("is a directory, not a datasets save_to_disk folder", path=url)
        return fs, path
    if options.container == "hf-disk":
        raise InputError("container 'hf-disk' needs a datasets save_to_disk folder", path=url)
    return None


def read_file(path: str, fmt: str = "auto", *, batch_size: int = 10_000, options: InputOptions | None = None,
              storage: Storage = DEFAULT_STORAGE) -> Iterator[dict[str, Any] | Rejection]:
    """Yield canonical records (dicts with every canonical column) and rejections for one input, in order.

    ``path`` is a file or a ``save_to_disk`` folder (local or any fsspec URL). ``options`` says how to read
    it; the older ``fmt`` names one of :data:`FORMATS` instead (not both).
    """
    options = _options(fmt, options, path)
    folder = _is_folder(path, options, storage)
    if folder is not None:
        yield from _read_hf_disk(path, *folder, options=options, storage=storage, batch_size=batch_size)
        return
    with open_binary(path, storage=storage) as f:
        head, f = _peek(f)
        yield from _normalize_stream(_items(f, path, head, options, batch_size), path, options)


def _options(fmt: str, options: InputOptions | None, path: str) -> InputOptions:
    if options is not None:
        if fmt != "auto":
            raise ConfigError(f"pass either fmt={fmt!r} or options, not both")
        return options
    if fmt not in FORMATS:
        raise InputError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}", path=path)
    return InputOptions.from_format(fmt)


def _peek(f: Any) -> tuple[bytes, Any]:
    head = f.peek(_SNIFF)[:_SNIFF] if hasattr(f, "peek") else b""
    if not head:
        buffered = io.BufferedReader(f, buffer_size=_SNIFF)
        head = buffered.peek(_SNIFF)[:_SNIFF]
        f = buffered
    return bytes(head), f


def _items(f: Any, path: str, head: bytes, options: InputOptions,
           batch_size: int) -> Iterator[tuple[int, Any] | Rejection]:
    container = _container_of(path, head, options)
    if container in ("parquet", "arrow", "csv", "tsv") and not head.strip():
        raise InputError("file is empty", path=path)
    if container == "jsonl":
        return _iter_jsonl(f, path)
    if container == "json_array":
        return iter(_JsonArrayStream(f, path))
    if container == "superni":
        return _iter_superni(f, path)
    if container == "parquet":
        return _iter_parquet(f, path, batch_size)
    if container == "arrow":
        return _iter_arrow(f, path, head, batch_size)
    return _iter_csv(f, path, "\t" if container == "tsv" else ",")


def _read_hf_disk(url: str, fs: Any, folder: str, *, options: InputOptions, storage: Storage,
                  batch_size: int) -> Iterator[dict[str, Any] | Rejection]:
    """A ``save_to_disk`` folder: its Arrow shards in order; a record's ``source`` defaults to its split."""
    shards = hf_disk_shards(fs, folder)
    present = list(dict.fromkeys(split for split, _ in shards if split is not None))
    missing = [s for s in options.splits if s not in present]
    if missing and present:
        raise InputError(f"no split(s) {missing} in this DatasetDict; it has {present}", path=url)
    seen_any = False
    for split, shard in shards:
        if split is not None and options.splits and split not in options.splits:
            continue
        shard_url = storage.url(fs, shard)
        with open_binary(shard_url, decompress=False, storage=storage) as f:
            head, f = _peek(f)
            items = _iter_arrow(f, shard_url, head, batch_size)
            for item in _normalize_stream(items, shard_url, options, default_source=split, require_records=False):
                seen_any = True
                yield item
    if not seen_any:
        raise InputError("dataset holds no records", path=url)


def _map_columns(obj: dict[str, Any], columns: Mapping[str, str]) -> dict[str, Any]:
    """Rename mapped columns; a mapped column replaces a field of the same name (when it is present)."""
    out = {k: v for k, v in obj.items() if k not in columns}
    for src, dst in columns.items():
        if src in obj:
            out[dst] = obj[src]
    return out


def _explain(message: str, columns: Mapping[str, str]) -> str:
    for src, dst in columns.items():
        if f"{dst!r}" in message:
            return f"{message} (mapped from column {src!r})"
    return message


def _normalize_stream(items: Iterator[tuple[int, Any] | Rejection], path: str, options: InputOptions, *,
                      default_source: str | None = None,
                      require_records: bool = True) -> Iterator[dict[str, Any] | Rejection]:
    seen_any = False
    columns = options.columns
    record_format: str | None = options.layout if options.layout in RECORD_FORMATS else None
    for item in items:
        seen_any = True
        if isinstance(item, Rejection):
            yield item
            continue
        line, obj = item
        if columns and isinstance(obj, dict):
            obj = _map_columns(obj, columns)
        if record_format is None:
            if not isinstance(obj, dict):
                yield Rejection(path, line, _raw(obj), f"expected a JSON object, got {type(obj).__name__}")
                continue
            record_format = detect_record_format(obj.keys())
            if record_format is None:
                raise InputError(
                    f"unknown record format (first record has keys {sorted(obj)[:8]}); expected alpaca "
                    "(instruction/output), dolly (instruction/response), openai (messages), sharegpt "
                    "(conversations) or canonical; pass a layout (--layout) or map columns "
                    "(--column prompt=instruction)", path=path, line=line)
        try:
            rec = normalize(obj, record_format)
        except RecordError as exc:
            yield Rejection(path, line, _raw(obj), _explain(str(exc), columns))
            continue
        if rec["source"] is None:
            rec["source"] = default_source
        rec["content_sha256"] = content_sha256(rec["instruction"], rec["input"], rec["output"], rec["messages"])
        rec["source_file"] = path
        rec["source_line"] = line
        yield rec
    if require_records and not seen_any:
        raise InputError("file holds no records", path=path)
