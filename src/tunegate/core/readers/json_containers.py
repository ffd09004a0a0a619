"""The JSON containers, streamed with line numbers: JSON Lines, a top-level JSON array (element by element,
in bounded memory) and a Super-NaturalInstructions task file (``Definition`` + ``Instances``)."""

from __future__ import annotations

import codecs
import io
import json
from collections.abc import Iterator
from typing import Any

from tunegate.core.readers.records import RAW_LIMIT, RawItem, Rejection, clip, has_invalid_utf8, raw_json
from tunegate.exceptions import InputError

_TEXT_CHUNK = 1 << 20


def iter_jsonl(f: io.BufferedIOBase | Any, path: str) -> Iterator[RawItem]:
    for lineno, raw in enumerate(f, 1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            text = raw.decode("utf-8", "backslashreplace").rstrip("\r\n")
            yield Rejection(path, lineno, clip(text), f"invalid UTF-8 at byte {exc.start}")
            continue
        if not line.strip():
            continue
        try:
            yield lineno, json.loads(line.rstrip("\r\n"))
        except json.JSONDecodeError as exc:
            yield Rejection(path, lineno, clip(line.rstrip("\r\n")), f"invalid JSON: {exc.msg} (column {exc.colno})")


class JsonArrayStream:
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

    def __iter__(self) -> Iterator[RawItem]:
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
                yield Rejection(self._path, line, clip(rest), "invalid JSON array: expected ',' or ']'"
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
                    yield Rejection(self._path, start_line, clip(self._rest()),
                                    f"invalid JSON at line {err_line}: {exc.msg}; the rest of the file is unreadable")
                    return
            raw_text = self._buf[self._pos : end]
            self._pos = end
            expect_value = False
            count += 1
            if has_invalid_utf8(raw_text):
                yield Rejection(self._path, start_line, clip(raw_text.encode("utf-8", "surrogateescape").decode(
                    "utf-8", "backslashreplace")), "invalid UTF-8")
                continue
            yield start_line, obj

    def _rest(self) -> str:
        parts = [self._buf[self._pos :]]
        size = len(parts[0])
        while size < RAW_LIMIT and not self._eof and self._fill():
            parts = [self._buf[self._pos :]]
            size = len(parts[0])
        return "".join(parts).strip()


def iter_superni(f: Any, path: str) -> Iterator[RawItem]:
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
            yield Rejection(path, position, raw_json(inst), "instance must be an object")
            continue
        outputs = inst.get("output")
        if isinstance(outputs, list):
            if not outputs:
                yield Rejection(path, position, raw_json(inst), "instance has an empty 'output' list")
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

