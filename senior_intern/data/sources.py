"""Reading dataset files into records, with every problem tied to a file and a line.

Record files are JSON Lines (``.jsonl``, one JSON object per line) or JSON (``.json``: an
array of objects, a single object, or JSON Lines saved with a ``.json`` name). Each record
keeps its source as ``file:line``. Plain text files (``.txt``, ``.md``) are read whole.

The format of a record is recognised by its fields (``record_format``):
``messages`` or ``conversations`` -> chat, ``instruction`` + ``output`` -> alpaca,
``prompt`` + ``completion`` -> prompt_completion, ``text`` -> text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from senior_intern.config import DatasetFormat
from senior_intern.data.code import SOURCE_FILENAMES, is_source_name, wide_encoding

RECORD_SUFFIXES = (".jsonl", ".json")
TEXT_SUFFIXES = (".txt", ".md", ".markdown", ".rst")

# Field sets that identify a record's format, checked in this order.
FORMAT_FIELDS: tuple[tuple[DatasetFormat, tuple[str, ...]], ...] = (
    (DatasetFormat.CHAT, ("messages",)),
    (DatasetFormat.CHAT, ("conversations",)),
    (DatasetFormat.ALPACA, ("instruction", "output")),
    (DatasetFormat.PROMPT_COMPLETION, ("prompt", "completion")),
    (DatasetFormat.TEXT, ("text",)),
)
KNOWN_FIELDS_HELP = "instruction/output, prompt/completion, messages, text"


@dataclass(frozen=True)
class Problem:
    """Something wrong with the input, where it is (``file:line`` or ``file``) and what is wrong.

    ``fields``: for a record none of the formats can read, the fields it has (the dataset
    doctor proposes a ``column_map`` from them).
    """

    source: str
    message: str
    fields: tuple[str, ...] = ()

    def __str__(self) -> str:
        return f"{self.source}: {self.message}"


@dataclass(frozen=True)
class Record:
    """One parsed JSON record and where it came from (``file:line``)."""

    source: str
    data: Any


def record_format(data: Any) -> DatasetFormat | None:
    """The format a record's fields identify, or None when it has none of the known fields."""
    if not isinstance(data, dict):
        return None
    for fmt, keys in FORMAT_FIELDS:
        if all(k in data for k in keys):
            return fmt
    return None


def _utf8_problem(display: str, data: bytes, exc: UnicodeDecodeError, line_offset: int = 0) -> Problem:
    line = data.count(b"\n", 0, exc.start) + 1 + line_offset
    col = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
    return Problem(
        f"{display}:{line}",
        f"not valid UTF-8 (byte 0x{data[exc.start]:02x} at column {col}); save the file with UTF-8 encoding",
    )


def _json_message(exc: json.JSONDecodeError) -> str:
    return f"malformed JSON ({exc.msg}: column {exc.colno})"


def read_bytes(path: Path, display: str) -> tuple[bytes | None, Problem | None]:
    """The file's bytes, or a problem naming it when it cannot be read or is UTF-16/UTF-32 text
    (said once for the file, not as a bad byte on every line)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return None, Problem(display, f"cannot read the file ({exc.strerror or exc})")
    wide = wide_encoding(data)
    if wide is not None:
        return None, Problem(display, f"the file is {wide} text, not UTF-8; save it with UTF-8 encoding "
                                      f"(for example: iconv -f {wide.replace(' ', '')} -t UTF-8 IN > OUT)")
    return data, None


def read_text(path: Path, display: str) -> tuple[str | None, Problem | None]:
    """The whole file as UTF-8 text (a BOM is dropped), or a problem with the line of the first bad byte."""
    data, problem = read_bytes(path, display)
    if data is None:
        return None, problem
    try:
        return data.decode("utf-8-sig"), None
    except UnicodeDecodeError as exc:
        return None, _utf8_problem(display, data, exc)


def read_jsonl(path: Path, display: str) -> tuple[list[Record], list[Problem]]:
    """Records of a JSON Lines file; blank lines are skipped, bad lines become problems."""
    data, problem = read_bytes(path, display)
    if data is None:
        return [], [problem]
    return _parse_jsonl(data, display)


def _parse_jsonl(data: bytes, display: str) -> tuple[list[Record], list[Problem]]:
    records: list[Record] = []
    problems: list[Problem] = []
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        source = f"{display}:{number}"
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            problems.append(_utf8_problem(display, raw, exc, line_offset=number - 1))
            continue
        try:
            records.append(Record(source, json.loads(line)))
        except json.JSONDecodeError as exc:
            problems.append(Problem(source, _json_message(exc)))
    return records, problems


def read_json(path: Path, display: str) -> tuple[list[Record], list[Problem]]:
    """Records of a ``.json`` file: an array (each element keeps its line), one object, or JSON Lines."""
    data, problem = read_bytes(path, display)
    if data is None:
        return [], [problem]
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return [], [_utf8_problem(display, data, exc)]
    decoder = json.JSONDecoder()
    start = len(text) - len(text.lstrip())
    if start == len(text):
        return [], []
    if text[start] != "[":
        try:
            value, end = decoder.raw_decode(text, start)
        except json.JSONDecodeError as exc:
            return [], [Problem(f"{display}:{exc.lineno}", _json_message(exc))]
        if text[end:].strip():  # more values follow: JSON Lines saved as .json
            return _parse_jsonl(data, display)
        return [Record(f"{display}:{text.count(chr(10), 0, start) + 1}", value)], []
    return _parse_array(text, start, display, decoder)


def _parse_array(text: str, start: int, display: str, decoder: json.JSONDecoder) -> tuple[list[Record], list[Problem]]:
    """Elements of a top-level JSON array, each with the line it starts on."""
    records: list[Record] = []
    pos, line, counted = start + 1, 1, 0

    def skip_ws(i: int) -> int:
        while i < len(text) and text[i] in " \t\r\n":
            i += 1
        return i

    def line_at(i: int) -> int:
        nonlocal line, counted
        line += text.count("\n", counted, i)
        counted = i
        return line

    pos = skip_ws(pos)
    if pos < len(text) and text[pos] == "]":
        return [], []
    while True:
        try:
            value, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            return records, [Problem(f"{display}:{exc.lineno}", _json_message(exc))]
        records.append(Record(f"{display}:{line_at(pos)}", value))
        pos = skip_ws(end)
        if pos < len(text) and text[pos] == ",":
            pos = skip_ws(pos + 1)
            continue
        if pos < len(text) and text[pos] == "]":
            if text[pos + 1:].strip():
                return records, [Problem(f"{display}:{line_at(pos + 1)}", "malformed JSON (extra data after the array)")]
            return records, []
        where = min(pos, len(text))
        return records, [Problem(f"{display}:{line_at(where)}", "malformed JSON (expected ',' or ']' after an array element)")]


def read_records(path: Path, display: str) -> tuple[list[Record], list[Problem]]:
    """Records of a record file (``.json`` as JSON, anything else as JSON Lines)."""
    if path.suffix.lower() == ".json":
        return read_json(path, display)
    return read_jsonl(path, display)


def detect_file_format(path: Path) -> DatasetFormat | None:
    """The format a file's extension implies: code, text, or None for record files (decided per record)."""
    suffix = path.suffix.lower()
    if suffix in RECORD_SUFFIXES:
        return None
    if suffix in TEXT_SUFFIXES and path.name not in SOURCE_FILENAMES:
        return DatasetFormat.TEXT
    if is_source_name(path.name, frozenset()):
        return DatasetFormat.CODE
    raise ValueError(
        f"{path}: cannot tell the dataset format from the extension {suffix or '(none)'!r}; use a .jsonl/.json "
        "record file, a .txt/.md text file, a source file or a folder of code, or set the format explicitly"
    )
