"""Bad input: each problem names its file and line; skip_malformed skips and counts them."""

from __future__ import annotations

from pathlib import Path

import pytest

from senior_intern.config import DataConfig, DatasetFormat
from senior_intern.data import DatasetError, load_dataset
from tests.data.conftest import write_jsonl

GOOD = {"instruction": "Say hi.", "output": "hi"}


def error_of(path, tok, **cfg) -> DatasetError:
    with pytest.raises(DatasetError) as info:
        load_dataset(path, tok, DataConfig(**cfg), 64)
    return info.value


def test_missing_path_is_file_not_found(tmp_path, tiny_tokenizer):
    with pytest.raises(FileNotFoundError, match="Dataset not found: .*nope.jsonl"):
        load_dataset(tmp_path / "nope.jsonl", tiny_tokenizer)


def test_malformed_json_line(tmp_path, tiny_tokenizer):
    path = write_jsonl(tmp_path / "data.jsonl", [GOOD, GOOD, '{"instruction": "x" "output": "y"}'])
    err = error_of(path, tiny_tokenizer)
    assert "data.jsonl:3: malformed JSON (Expecting ',' delimiter: column 21)" in str(err)
    assert "skip_malformed" in str(err)
    assert [str(p) for p in err.problems] == ["data.jsonl:3: malformed JSON (Expecting ',' delimiter: column 21)"]


def test_not_utf8_line(tmp_path, tiny_tokenizer):
    path = tmp_path / "data.jsonl"
    path.write_bytes(b'{"text": "ok"}\n{"text": "caf\xe9"}\n')
    err = error_of(path, tiny_tokenizer)
    assert "data.jsonl:2: not valid UTF-8 (byte 0xe9 at column 14)" in str(err)
    text = tmp_path / "notes.txt"
    text.write_bytes(b"line one\nline two \xff\n")
    assert "notes.txt:2: not valid UTF-8 (byte 0xff at column 10)" in str(error_of(text, tiny_tokenizer))


def test_record_with_none_of_the_known_fields(tmp_path, tiny_tokenizer):
    path = write_jsonl(tmp_path / "data.jsonl", [GOOD, {"question": "q", "answer": "a"}, ["a", "list"]])
    err = error_of(path, tiny_tokenizer)
    assert "data.jsonl:2: record has none of the known fields (instruction/output, prompt/completion, messages, text); it has: question, answer" in str(err)
    assert "data.jsonl:3: record has none of the known fields" in str(err)


def test_unreadable_file(tmp_path, tiny_tokenizer, monkeypatch):
    folder = tmp_path / "data"
    folder.mkdir()
    write_jsonl(folder / "a.jsonl", [GOOD])
    locked = write_jsonl(folder / "b.jsonl", [GOOD])
    real = Path.read_bytes

    def read_bytes(self):
        if self == locked:
            raise PermissionError(13, "Permission denied")
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    err = error_of(folder, tiny_tokenizer, format=DatasetFormat.ALPACA)
    assert "b.jsonl: cannot read the file (Permission denied)" in str(err)
    loaded = load_dataset(folder, tiny_tokenizer, DataConfig(format=DatasetFormat.ALPACA, skip_malformed=True), 64)
    assert loaded.skipped == 1 and [s.source for s in loaded.samples] == ["a.jsonl:1"]


def test_empty_dataset(tmp_path, tiny_tokenizer):
    empty = tmp_path / "data.jsonl"
    empty.write_text("\n\n", encoding="utf-8")
    assert "data.jsonl: the dataset is empty: no records or text found" in str(error_of(empty, tiny_tokenizer))
    empty_json = tmp_path / "data.json"
    empty_json.write_text("[]", encoding="utf-8")
    assert "the dataset is empty" in str(error_of(empty_json, tiny_tokenizer))


def test_sample_with_no_trained_tokens(tmp_path, tiny_tokenizer):
    long_prompt = {"instruction": "word " * 80, "output": "ok"}
    path = write_jsonl(tmp_path / "data.jsonl", [GOOD, long_prompt])
    err = error_of(path, tiny_tokenizer)
    assert "data.jsonl:2: no trained tokens (the response was cut off at max_seq_length 64" in str(err)


def test_invalid_field_values(tmp_path, tiny_tokenizer):
    records = [
        {"instruction": "i", "output": ""},
        {"instruction": "i", "output": 3},
        {"messages": [{"role": "user", "content": "only a question"}]},
        {"messages": [{"role": "narrator", "content": "x"}, {"role": "assistant", "content": "y"}]},
        {"messages": "not a list"},
        {"messages": [{"role": "user", "content": ["parts"]}, {"role": "assistant", "content": "y"}]},
        {"messages": ["text"]},
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "  "}]},
    ]
    err = error_of(write_jsonl(tmp_path / "data.jsonl", records), tiny_tokenizer)
    messages = [str(p) for p in err.problems]
    assert messages == [
        "data.jsonl:1: field 'output' is empty",
        "data.jsonl:2: field 'output' is a int, not a string",
        "data.jsonl:3: the conversation has no assistant turn to train on",
        "data.jsonl:4: message 1 has an unknown role 'narrator' (use system, user or assistant)",
        "data.jsonl:5: 'messages' must be a non-empty list of {role, content} objects",
        "data.jsonl:6: message 1 has no text 'content'",
        "data.jsonl:7: message 1 is not an object with 'role' and 'content'",
        "data.jsonl:8: every assistant turn is empty",
    ]


def test_chat_template_errors_are_record_problems(tmp_path):
    from tests.conftest import make_tiny_tokenizer

    tok = make_tiny_tokenizer()
    tok.chat_template = "{% if messages[0]['role'] != 'user' %}{{ raise_exception('roles must start with user') }}{% endif %}x"
    path = write_jsonl(tmp_path / "data.jsonl", [{"messages": [{"role": "assistant", "content": "y"}]}])
    assert "data.jsonl:1: the tokenizer's chat template rejected the conversation: roles must start with user" in str(error_of(path, tok))


def test_malformed_json_array(tmp_path, tiny_tokenizer):
    path = tmp_path / "data.json"
    path.write_text('[\n  {"text": "a"}\n  {"text": "b"}\n]', encoding="utf-8")
    assert "data.json:3: malformed JSON (expected ',' or ']' after an array element)" in str(error_of(path, tiny_tokenizer))
    path.write_text('[\n  {"text": "a"},\n  {"text": "b"\n  {"text": "c"}\n]', encoding="utf-8")
    assert "data.json:4: malformed JSON (Expecting ',' delimiter: column 3)" in str(error_of(path, tiny_tokenizer))
    path.write_text('[\n  {"text": "a"},\n  {"text": }\n]', encoding="utf-8")
    assert "data.json:3: malformed JSON (Expecting value: column 12)" in str(error_of(path, tiny_tokenizer))
    path.write_text('{"text": ', encoding="utf-8")
    assert "data.json:1: malformed JSON (Expecting value" in str(error_of(path, tiny_tokenizer))
    path.write_text('[{"text": "a"}] x', encoding="utf-8")
    assert "data.json:1: malformed JSON (extra data after the array)" in str(error_of(path, tiny_tokenizer))


def test_skip_malformed_skips_counts_and_lists(tmp_path, tiny_tokenizer):
    records = [GOOD, "{broken", {"nothing": 1}, GOOD, {"instruction": "i", "output": ""}, "[1,", "{", "nope", GOOD]
    path = write_jsonl(tmp_path / "data.jsonl", records)
    err = error_of(path, tiny_tokenizer)
    assert len(err.problems) == 6
    assert str(err).count("\n  data.jsonl:") == 5 and "... and 1 more" in str(err)
    loaded = load_dataset(path, tiny_tokenizer, DataConfig(skip_malformed=True), 64)
    assert [s.source for s in loaded.samples] == ["data.jsonl:1", "data.jsonl:4", "data.jsonl:9"]
    assert loaded.records == 9 and loaded.skipped == 6 and len(loaded.problems) == 6
    assert loaded.problems[0].source == "data.jsonl:2"
    summary = "\n".join(loaded.summary_lines())
    assert "6 records skipped" in summary and "data.jsonl:2: malformed JSON" in summary


def test_all_records_skipped_is_still_an_error(tmp_path, tiny_tokenizer):
    path = write_jsonl(tmp_path / "data.jsonl", ["{bad", "{worse"])
    err = error_of(path, tiny_tokenizer, skip_malformed=True)
    assert "the dataset is empty: all 2 records or files had problems" in str(err)
    assert isinstance(err, ValueError)


def test_assistant_text_missing_from_the_template_output(tmp_path):
    from tests.conftest import make_tiny_tokenizer

    tok = make_tiny_tokenizer()
    tok.chat_template = "{% for m in messages %}{{ m['role'] + ': ' + (m['content'] | upper) + '\n' }}{% endfor %}"
    path = write_jsonl(tmp_path / "data.jsonl", [{"prompt": "q", "completion": "lower case"}])
    assert "data.jsonl:1: assistant turn (message 2) not found in the chat template's output" in str(error_of(path, tok))


def test_a_binary_source_file_is_a_problem(tmp_path, tiny_tokenizer):
    path = tmp_path / "blob.py"
    path.write_bytes(b"\x00\x01")
    assert "blob.py: cannot train on this file: binary (contains NUL bytes)" in str(error_of(path, tiny_tokenizer))
