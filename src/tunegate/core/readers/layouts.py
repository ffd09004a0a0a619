"""Layouts: which fields a raw record has, and how they become canonical fields.

``alpaca``, ``dolly`` and ``canonical`` name the instruction/input/output fields; ``openai`` and
``sharegpt`` hold a conversation, projected onto instruction/input/output and kept whole in ``messages``.
:func:`normalize_items` applies the column map, detects the layout from the first records and adds the
content hash and provenance, turning every record a layout cannot fill into a :class:`Rejection`.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, NamedTuple

from tunegate.core.readers.options import RECORD_FORMATS, InputOptions
from tunegate.core.readers.records import RawItem, RecordError, Rejection, has_invalid_utf8, raw_json
from tunegate.core.schema import content_sha256
from tunegate.exceptions import InputError


class _Layout(NamedTuple):
    #: The keys read as instruction, input and output; ``None``: projected from the conversation.
    texts: tuple[str, str, str] | None
    #: ``(field, role key, content key)`` of the conversation; required when ``texts`` is ``None``,
    #: else kept when present.
    turns: tuple[str, str, str] | None
    #: The keys tried for the task, in order.
    task: tuple[str, ...]


_OPENAI_TURNS = ("messages", "role", "content")
_LAYOUTS = {
    "alpaca": _Layout(("instruction", "input", "output"), None, ("task", "category")),
    "dolly": _Layout(("instruction", "context", "response"), None, ("category", "task")),
    "openai": _Layout(None, _OPENAI_TURNS, ("task", "category")),
    "sharegpt": _Layout(None, ("conversations", "from", "value"), ("task", "category")),
    # tunegate's own output: the fields as they are, messages optional
    "canonical": _Layout(("instruction", "input", "output"), _OPENAI_TURNS, ("task",)),
}

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


def _string(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise RecordError(f"{what} must be a string, got {type(value).__name__}")
    if has_invalid_utf8(value):
        raise RecordError(f"{what} is not valid UTF-8")
    return value


def _text(obj: dict[str, Any], key: str, *, required: bool) -> str:
    if key not in obj or obj[key] is None:
        if required:
            raise RecordError(f"missing required field {key!r}")
        return ""
    return _string(obj[key], f"field {key!r}")


def _opt(obj: dict[str, Any], *keys: str) -> str | None:
    for key in keys:
        value = obj.get(key)
        if value is None or value == "":
            continue
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        return _string(value, f"field {key!r}")
    return None


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
        turns.append({"role": _ROLE_ALIASES[role.lower()], "content": _string(content, f"{field}[{i}].{content_key}")})
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
    layout = _LAYOUTS.get(record_format)
    if layout is None:  # pragma: no cover - guarded by callers
        raise ValueError(f"unknown record format {record_format!r}")
    texts, turns = layout.texts, layout.turns
    messages: list[dict[str, str]] | None = None
    if texts is not None:
        instruction = _text(obj, texts[0], required=True)
        input_ = _text(obj, texts[1], required=False)
        output = _text(obj, texts[2], required=True)
    elif turns is not None:
        messages = _turns(obj.get(turns[0]), *turns)
        instruction, input_, output = _project_chat(messages)
    task = _opt(obj, *layout.task)
    if texts is not None and turns is not None and obj.get(turns[0]) is not None:
        messages = _turns(obj[turns[0]], *turns)
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


#: How many records the layout is detected from: one odd first record must not decide (or refuse) a file.
DETECT_RECORDS = 100


def _detect(items: list[RawItem], columns: Mapping[str, str]) -> str | None:
    """The layout most of ``items`` (raw records, column map applied) fit; on a tie, the one seen first."""
    votes: dict[str, int] = {}
    for item in items:
        if not isinstance(item, Rejection) and isinstance(item[1], dict):
            found = detect_record_format(_map_columns(item[1], columns).keys() if columns else item[1].keys())
            if found is not None:
                votes[found] = votes.get(found, 0) + 1
    return max(votes, key=lambda k: votes[k]) if votes else None  # max keeps the first of equal counts


def detect_head(items: Iterator[RawItem], columns: Mapping[str, str]) -> tuple[str | None, list[RawItem]]:
    """The layout of an input from its head (up to :data:`DETECT_RECORDS` objects, read from ``items``), and the
    items read for it (they are still to be normalized)."""
    head: list[RawItem] = []
    objects = 0
    for item in items:
        head.append(item)
        if not isinstance(item, Rejection) and isinstance(item[1], dict):
            objects += 1
            if objects >= DETECT_RECORDS:
                break
    return _detect(head, columns), head


def normalize_items(items: Iterator[RawItem], path: str, options: InputOptions, *,
                    default_source: str | None = None,
                    require_records: bool = True) -> Iterator[dict[str, Any] | Rejection]:
    """Canonical records (with content hash, ``source_file``, ``source_line``) and rejections, in order.

    Without a layout in ``options``, the layout is the one most of the first :data:`DETECT_RECORDS` records
    fit; records that do not fit it are rejected one by one. ``default_source`` fills ``source`` where a
    record has none; ``require_records`` makes an input that yields nothing an :class:`InputError`.
    """
    seen_any = False
    columns = options.columns
    record_format: str | None = options.layout if options.layout in RECORD_FORMATS else None
    if record_format is None:
        record_format, head = detect_head(items, columns)
        first = next((i for i in head if not isinstance(i, Rejection) and isinstance(i[1], dict)), None)
        if record_format is None and first is not None:
            objects = sum(1 for i in head if not isinstance(i, Rejection) and isinstance(i[1], dict))
            line, obj = first
            obj = _map_columns(obj, columns) if columns else obj
            raise InputError(
                f"unknown record format (none of the first {objects} records fits a layout; the first has keys "
                f"{sorted(obj)[:8]}); expected alpaca (instruction/output), dolly (instruction/response), openai "
                "(messages), sharegpt (conversations) or canonical; pass a layout (--layout) or map columns "
                "(--column prompt=instruction)", path=path, line=line)
        items = itertools.chain(head, items)
    for item in items:
        seen_any = True
        if isinstance(item, Rejection):
            yield item
            continue
        line, obj = item
        if columns and isinstance(obj, dict):
            obj = _map_columns(obj, columns)
        if record_format is None:  # no record is an object: each is rejected below
            yield Rejection(path, line, raw_json(obj), f"expected a JSON object, got {type(obj).__name__}")
            continue
        try:
            rec = normalize(obj, record_format)
        except RecordError as exc:
            yield Rejection(path, line, raw_json(obj), _explain(str(exc), columns))
            continue
        if rec["source"] is None:
            rec["source"] = default_source
        rec["content_sha256"] = content_sha256(rec["instruction"], rec["input"], rec["output"], rec["messages"])
        rec["source_file"] = path
        rec["source_line"] = line
        yield rec
    if require_records and not seen_any:
        raise InputError("file holds no records", path=path)
