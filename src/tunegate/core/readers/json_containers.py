"""The JSON containers, streamed with line numbers: JSON Lines, a top-level JSON array (element by element,
in bounded memory) and a Super-NaturalInstructions task file (``Definition`` + ``Instances``)."""

from __future__ import annotations

import codecs
import io
import json
import re
from collections.abc import Generator, Iterator
from typing import Any

from tunegate.core.io import stream_errors
from tunegate.core.readers.records import RAW_LIMIT, RawItem, Rejection, clip, has_invalid_utf8, raw_json
from tunegate.exceptions import InputError

_TEXT_CHUNK = 1 << 20


def json_error_message(exc: ValueError | RecursionError) -> str:
    """Why a JSON text does not parse, for a rejection."""
    if isinstance(exc, json.JSONDecodeError):
        return f"invalid JSON: {exc.msg} (column {exc.colno})"
    if isinstance(exc, RecursionError):
        return "invalid JSON: nested too deep to read"
    return f"invalid JSON: {exc}"  # e.g. an integer literal with more digits than Python converts


def _unreadable(path: str, line: int, after: str, exc: BaseException) -> Rejection:
    return Rejection(path, line, "", f"unreadable data after {after} ({type(exc).__name__}: {exc}); "
                     "the rest of the file is unreadable")


def iter_jsonl(f: io.BufferedIOBase | Any, path: str, *, first_line: int = 1) -> Iterator[RawItem]:
    """One record per line. A line that is not JSON is rejected with its number; a stream that breaks part-way
    (a truncated or corrupt ``.gz``) keeps the lines before and rejects the rest as one entry. ``f`` may be any
    iterable of lines; ``first_line`` numbers its first line (a piece of a file, :mod:`.pieces`)."""
    lines = iter(f)
    lineno = first_line - 1
    errors = stream_errors()
    while True:
        try:
            raw = next(lines)
        except StopIteration:
            return
        except errors as exc:
            yield _unreadable(path, lineno + 1, f"line {lineno}", exc)
            return
        lineno += 1
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            text = raw.decode("utf-8", "backslashreplace").rstrip("\r\n")
            yield Rejection(path, lineno, clip(text), f"invalid UTF-8 at byte {exc.start}")
            continue
        if lineno == 1:
            line = line.removeprefix("\ufeff")  # a UTF-8 byte order mark is not part of the first record
        if not line.strip(_JSON_WS):
            continue
        line = line.rstrip("\r\n")
        try:
            yield lineno, json.loads(line)
        except (ValueError, RecursionError) as exc:
            yield Rejection(path, lineno, clip(line), json_error_message(exc))


#: Whitespace between JSON tokens (RFC 8259); a JSON Lines line holding only these is blank.
_JSON_WS = " \t\r\n"
#: The characters that start or end a JSON value, outside and inside a string.
_STRUCTURE = re.compile(r'[\[\]{}",\s]')
_STRING_END = re.compile(r'["\\]')


class JsonArrayStream:
    """Stream the elements of a top-level JSON array with their starting line numbers.

    Holds one element (plus a read-ahead block) in memory, so a multi-GB Alpaca-style JSON file
    streams in bounded memory. Undecodable bytes become lone surrogates and are rejected per record;
    an element nested too deep to parse is rejected on its own. Arrays back to back (``[...][...]``) are
    read one after the other; any other content after the closing ``]`` is rejected with its line.
    """

    def __init__(self, f: Any, path: str) -> None:
        self._raw = f
        self._utf8 = codecs.getincrementaldecoder("utf-8")("surrogateescape")
        self._error: BaseException | None = None  # a read that failed after returning data, raised next time
        self._path = path
        self._buf = ""
        self._pos = 0
        self._line = 1
        self._eof = False
        self._decoder = json.JSONDecoder()
        self._elements = 0

    def _read_block(self) -> str:
        """The next block of text ("" at the end). Reads with ``read1`` where the stream has it, so that the
        text before damage in a compressed stream comes back first; the error is raised on the next call."""
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        read = getattr(self._raw, "read1", None) or self._raw.read
        parts: list[bytes] = []
        size = 0
        while size < _TEXT_CHUNK:
            try:
                data = read(_TEXT_CHUNK - size)
            except stream_errors() as exc:
                if not parts:
                    raise
                self._error = exc
                break
            if not data:
                return self._utf8.decode(b"".join(parts), final=True)
            parts.append(data)
            size += len(data)
        return self._utf8.decode(b"".join(parts)) or self._read_block()  # a block of half a character

    def _fill(self) -> bool:
        if self._eof:
            return False
        block = self._read_block()
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
        try:
            yield from self._arrays()
        except stream_errors() as exc:
            yield _unreadable(self._path, self._line_at(self._pos), f"element {self._elements}", exc)

    def _arrays(self) -> Iterator[RawItem]:
        if self._skip_ws() != "[":
            raise InputError("expected a JSON array", path=self._path, line=self._line_at(self._pos))
        while True:
            self._pos += 1  # past "["
            if not (yield from self._array_elements()):
                return
            ch = self._skip_ws()
            while ch not in ("", "["):  # content after the closing "]": reject it, never ignore it
                start_line = self._line_at(self._pos)
                decoded = yield from self._value(start_line, "after the closing ']' of the array")
                if decoded is None:
                    return
                yield Rejection(self._path, start_line, clip(decoded[1]),
                                "JSON value after the closing ']' of the array")
                ch = self._skip_ws()
            if ch == "":
                return

    def _array_elements(self) -> Generator[RawItem, None, bool]:
        """The elements of one array (its ``[`` consumed); ``True`` when its ``]`` closed it."""
        expect_value = True
        count = 0
        while True:
            ch = self._skip_ws()
            if ch == "]" and (not expect_value or count == 0):
                self._pos += 1
                return True
            if ch == "" or (not expect_value and ch != ","):
                line = self._line_at(self._pos)
                rest = self._rest()
                yield Rejection(self._path, line, clip(rest), "invalid JSON array: expected ',' or ']'"
                                + ("" if rest else " before end of file") + "; the rest of the file is unreadable")
                return False
            if not expect_value:
                self._pos += 1
                expect_value = True
                continue
            start_line = self._line_at(self._pos)
            decoded = yield from self._value(start_line, "")
            if decoded is None:
                return False
            expect_value = False
            count += 1
            self._elements += 1
            obj, raw_text, error = decoded
            if error:
                yield Rejection(self._path, start_line, clip(raw_text), error)
            elif has_invalid_utf8(raw_text):
                yield Rejection(self._path, start_line, clip(raw_text.encode("utf-8", "surrogateescape").decode(
                    "utf-8", "backslashreplace")), "invalid UTF-8")
            else:
                yield start_line, obj

    def _value(self, start_line: int, where: str) -> Generator[RawItem, None, tuple[Any, str, str] | None]:
        """Decode the value at the cursor: ``(value, its text, "")``, or ``(None, its text, why)`` for a value
        whose extent is known but that does not parse (nested too deep); ``None`` after rejecting the rest of
        the file (the text is not JSON)."""
        while True:
            try:
                obj, end = self._decoder.raw_decode(self._buf, self._pos)
                break
            except json.JSONDecodeError as exc:
                if self._fill():
                    continue
                err_line = self._line + self._buf.count("\n", 0, exc.pos)
                yield Rejection(self._path, start_line, clip(self._rest()),
                                f"invalid JSON{' ' + where if where else ''} at line {err_line}: {exc.msg}; "
                                "the rest of the file is unreadable")
                return None
            except (ValueError, RecursionError) as exc:
                end = self._value_end()
                raw_text = self._buf[self._pos : end]
                self._pos = end
                return None, raw_text, json_error_message(exc)
        raw_text = self._buf[self._pos : end]
        self._pos = end
        return obj, raw_text, ""

    def _value_end(self) -> int:
        """Where the value at the cursor ends (brackets and strings matched, without parsing it), filling the
        buffer as needed; the end of the file if it never does."""
        depth = 0
        in_string = False
        i = self._pos
        while True:
            match = (_STRING_END if in_string else _STRUCTURE).search(self._buf, i)
            if match is None or (match.group() == "\\" and match.end() >= len(self._buf)):
                # the value goes on in the next block: resume at the end of this one (or at its last backslash)
                offset = (len(self._buf) if match is None else match.start()) - self._pos
                if not self._fill():
                    return len(self._buf)
                i = self._pos + offset
                continue
            ch, i = match.group(), match.end()
            if in_string:
                if ch == "\\":
                    i += 1  # skip the escaped character
                    continue
                in_string = False
                if depth == 0:
                    return i
            elif ch == '"':
                in_string = True
            elif ch in "[{":
                depth += 1
            elif ch in "]}":
                if depth == 0:  # a bare scalar, ended by the enclosing array's "]"
                    return i - 1
                depth -= 1
                if depth == 0:
                    return i
            elif depth == 0:  # "," or whitespace ends a bare scalar
                return i - 1

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
    except (ValueError, RecursionError) as exc:  # nested too deep, an integer too long to convert
        raise InputError(json_error_message(exc), path=path) from exc
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

