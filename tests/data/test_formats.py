"""Every record format, with the trained/masked labels checked token by token."""

from __future__ import annotations

import json

import pytest

from senior_intern.config import DataConfig, DatasetFormat
from senior_intern.data import IGNORE_INDEX, load_dataset
from tests.conftest import make_tiny_tokenizer
from tests.data.conftest import ids, write_jsonl

M = IGNORE_INDEX


def expect(tok, *parts):
    """(input_ids, labels) for (text-or-None, trained) parts; None is EOS."""
    all_ids, labels = [], []
    for text, trained in parts:
        part = [tok.eos_token_id] if text is None else ids(tok, text)
        all_ids += part
        labels += part if trained else [M] * len(part)
    return all_ids, labels


def load_one(tmp_path, tok, record, **cfg):
    path = write_jsonl(tmp_path / "data.jsonl", [record])
    loaded = load_dataset(path, tok, DataConfig(**cfg), 128)
    assert len(loaded.samples) == 1
    return loaded, loaded.samples[0]


def test_alpaca_with_chat_template_trains_only_the_output_and_eos(tmp_path, tiny_tokenizer):
    loaded, s = load_one(tmp_path, tiny_tokenizer, {"instruction": "Say hello.", "input": "", "output": "Hello, world!"})
    want_ids, want_labels = expect(
        tiny_tokenizer,
        ("<|im_start|>user\nSay hello.<|im_end|>\n<|im_start|>assistant\n", False),
        ("Hello, world!<|im_end|>", True),
    )
    assert s.input_ids == want_ids and s.labels == want_labels
    assert s.input_ids[-1] == tiny_tokenizer.eos_token_id and s.labels[-1] == tiny_tokenizer.eos_token_id
    assert s.source == "data.jsonl:1"
    assert loaded.format == DatasetFormat.ALPACA and loaded.template == "chat template"
    rendered = tiny_tokenizer.apply_chat_template(
        [{"role": "user", "content": "Say hello."}, {"role": "assistant", "content": "Hello, world!"}], tokenize=False
    )
    assert tiny_tokenizer.decode(s.input_ids) == rendered.rstrip("\n")


def test_alpaca_input_and_system_go_into_the_prompt(tmp_path, tiny_tokenizer):
    record = {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5", "system": "Be brief."}
    _, s = load_one(tmp_path, tiny_tokenizer, record)
    want_ids, want_labels = expect(
        tiny_tokenizer,
        ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nAdd the numbers.\n\n2 and 3<|im_end|>\n<|im_start|>assistant\n", False),
        ("5<|im_end|>", True),
    )
    assert (s.input_ids, s.labels) == (want_ids, want_labels)


def test_alpaca_text_template_without_chat_template(tmp_path, plain_tokenizer):
    loaded, s = load_one(tmp_path, plain_tokenizer, {"instruction": "Say hello.", "input": "to Bob", "output": "Hello, Bob!"})
    want = expect(
        plain_tokenizer,
        ("### Instruction:\nSay hello.\n\n### Input:\nto Bob\n\n### Response:\n", False),
        ("Hello, Bob!", True),
        (None, True),
    )
    assert (s.input_ids, s.labels) == want
    assert loaded.template == "text template"
    _, s = load_one(tmp_path, plain_tokenizer, {"instruction": "Say hello.", "output": "Hello!"})
    assert (s.input_ids, s.labels) == expect(
        plain_tokenizer, ("### Instruction:\nSay hello.\n\n### Response:\n", False), ("Hello!", True), (None, True)
    )


def test_prompt_completion_masks_the_prompt(tmp_path, tiny_tokenizer, plain_tokenizer):
    record = {"prompt": "def add(a, b):", "completion": "\n    return a + b\n"}
    loaded, s = load_one(tmp_path, plain_tokenizer, record)
    assert loaded.format == DatasetFormat.PROMPT_COMPLETION
    assert (s.input_ids, s.labels) == expect(plain_tokenizer, ("def add(a, b):", False), ("\n    return a + b\n", True), (None, True))
    _, s = load_one(tmp_path, tiny_tokenizer, record)
    assert (s.input_ids, s.labels) == expect(
        tiny_tokenizer,
        ("<|im_start|>user\ndef add(a, b):<|im_end|>\n<|im_start|>assistant\n", False),
        ("\n    return a + b\n<|im_end|>", True),
    )


CHAT = {
    "messages": [
        {"role": "system", "content": "You write Python."},
        {"role": "user", "content": "Say hi."},
        {"role": "assistant", "content": "hi"},
        {"role": "user", "content": "Now add."},
        {"role": "assistant", "content": "a + b"},
        {"role": "user", "content": "Thanks!"},
    ]
}


def test_chat_trains_only_assistant_turns(tmp_path, tiny_tokenizer):
    loaded, s = load_one(tmp_path, tiny_tokenizer, CHAT)
    assert loaded.format == DatasetFormat.CHAT
    want = expect(
        tiny_tokenizer,
        ("<|im_start|>system\nYou write Python.<|im_end|>\n<|im_start|>user\nSay hi.<|im_end|>\n<|im_start|>assistant\n", False),
        ("hi<|im_end|>", True),
        ("\n<|im_start|>user\nNow add.<|im_end|>\n<|im_start|>assistant\n", False),
        ("a + b<|im_end|>", True),
    )
    assert (s.input_ids, s.labels) == want  # the trailing user turn is dropped: nothing to train after it
    trained_text = tiny_tokenizer.decode([t for t, label in zip(s.input_ids, s.labels) if label != M])
    assert trained_text == "hi<|im_end|>a + b<|im_end|>"


def test_chat_without_template_uses_role_blocks(tmp_path, plain_tokenizer):
    _, s = load_one(tmp_path, plain_tokenizer, CHAT)
    want = expect(
        plain_tokenizer,
        ("### System:\nYou write Python.\n\n", False),
        ("### User:\nSay hi.\n\n", False),
        ("### Assistant:\n", False),
        ("hi", True),
        (None, True),
        ("\n\n", False),
        ("### User:\nNow add.\n\n", False),
        ("### Assistant:\n", False),
        ("a + b", True),
        (None, True),
    )
    assert (s.input_ids, s.labels) == want


def test_sharegpt_conversations_are_chat(tmp_path, tiny_tokenizer):
    record = {"conversations": [{"from": "human", "value": "Say hi."}, {"from": "gpt", "value": "hi"}]}
    _, s = load_one(tmp_path, tiny_tokenizer, record)
    assert (s.input_ids, s.labels) == expect(
        tiny_tokenizer, ("<|im_start|>user\nSay hi.<|im_end|>\n<|im_start|>assistant\n", False), ("hi<|im_end|>", True)
    )


def test_chat_template_without_consistent_prefixes_falls_back_to_search(tmp_path):
    tok = make_tiny_tokenizer()
    # The header depends on the number of messages, so a prefix never starts the full rendering.
    tok.chat_template = (
        "{{ 'n=' ~ (messages | length) ~ '\n' }}"
        "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    )
    record = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "x = 1"},
                           {"role": "user", "content": "b"}, {"role": "assistant", "content": "y = 2"}]}
    _, s = load_one(tmp_path, tok, record)
    assert (s.input_ids, s.labels) == expect(
        tok,
        ("n=4\n<|im_start|>user\na<|im_end|>\n<|im_start|>assistant\n", False),
        ("x = 1<|im_end|>", True),
        ("\n<|im_start|>user\nb<|im_end|>\n<|im_start|>assistant\n", False),
        ("y = 2<|im_end|>", True),
    )


def test_text_records_are_trained_whole_with_eos(tmp_path, tiny_tokenizer):
    loaded, s = load_one(tmp_path, tiny_tokenizer, {"text": "import os\nprint(os.getcwd())\n"})
    assert loaded.format == DatasetFormat.TEXT
    assert (s.input_ids, s.labels) == expect(tiny_tokenizer, ("import os\nprint(os.getcwd())\n", True), (None, True))


def test_bos_is_added_and_masked_when_the_tokenizer_adds_it(tmp_path, bos_tokenizer):
    _, s = load_one(tmp_path, bos_tokenizer, {"text": "hello"})
    bos = bos_tokenizer.convert_tokens_to_ids("<|im_start|>")
    assert s.input_ids == [bos] + ids(bos_tokenizer, "hello") + [bos_tokenizer.eos_token_id]
    assert s.labels[0] == M and s.labels[1:] == s.input_ids[1:]


def test_text_file_is_one_sample_and_long_files_are_windowed(tmp_path, tiny_tokenizer):
    short = tmp_path / "notes.md"
    short.write_text("The quick brown fox jumps over the lazy dog.", encoding="utf-8")
    loaded = load_dataset(short, tiny_tokenizer, None, 128)
    assert loaded.format == DatasetFormat.TEXT
    assert [s.source for s in loaded.samples] == ["notes.md"]
    assert loaded.samples[0].input_ids == ids(tiny_tokenizer, short.read_text()) + [tiny_tokenizer.eos_token_id]
    long = tmp_path / "long.txt"
    long.write_text("The quick brown fox jumps over the lazy dog. " * 20, encoding="utf-8")
    loaded = load_dataset(long, tiny_tokenizer, DataConfig(window_overlap=4), 32)
    assert len(loaded.samples) > 1
    assert all(len(s) <= 32 for s in loaded.samples)
    assert loaded.samples[1].source == "long.txt#window2"


def test_json_array_records_keep_their_lines(tmp_path, tiny_tokenizer):
    path = tmp_path / "data.json"
    path.write_text('[\n  {"text": "a b"},\n\n  {"prompt": "p",\n   "completion": "c"}\n]\n', encoding="utf-8")
    loaded = load_dataset(path, tiny_tokenizer, None, 64)
    assert [s.source for s in loaded.samples] == ["data.json:2", "data.json:4"]
    one = tmp_path / "one.json"
    one.write_text(json.dumps({"instruction": "i", "output": "o"}), encoding="utf-8")
    assert load_dataset(one, tiny_tokenizer, None, 64).format == DatasetFormat.ALPACA
    lines = write_jsonl(tmp_path / "lines.json", [{"text": "a"}, {"text": "b"}])  # JSON Lines named .json
    assert [s.source for s in load_dataset(lines, tiny_tokenizer, None, 64).samples] == ["lines.json:1", "lines.json:2"]


def test_format_is_detected_per_record_and_can_be_forced(tmp_path, tiny_tokenizer):
    path = write_jsonl(tmp_path / "mixed.jsonl", [
        {"instruction": "i", "output": "o", "text": "plain words"},
        {"instruction": "j", "output": "p"},
        {"text": "more"},
    ])
    auto = load_dataset(path, tiny_tokenizer, None, 64)
    assert auto.format == DatasetFormat.ALPACA  # the most common format
    assert auto.samples[0].labels[0] == M  # rendered as instruction data: the prompt is masked
    forced = load_dataset(path, tiny_tokenizer, DataConfig(format=DatasetFormat.TEXT, skip_malformed=True), 64)
    assert forced.format == DatasetFormat.TEXT
    assert forced.samples[0].input_ids == ids(tiny_tokenizer, "plain words") + [tiny_tokenizer.eos_token_id]
    assert forced.skipped == 1 and "field 'text' is missing" in str(forced.problems[0])
    assert forced.problems[0].source == "mixed.jsonl:2"


def test_forced_format_reads_every_record_file_of_a_folder(tmp_path, tiny_tokenizer):
    folder = tmp_path / "data"
    (folder / "more").mkdir(parents=True)
    write_jsonl(folder / "a.jsonl", [{"prompt": "p", "completion": "c"}])
    write_jsonl(folder / "more" / "b.jsonl", [{"prompt": "q", "completion": "d"}])
    (folder / "readme.md").write_text("not read for prompt/completion data", encoding="utf-8")
    loaded = load_dataset(folder, tiny_tokenizer, DataConfig(format=DatasetFormat.PROMPT_COMPLETION), 64)
    assert [s.source for s in loaded.samples] == ["a.jsonl:1", "more/b.jsonl:1"]
    text = load_dataset(folder, tiny_tokenizer, DataConfig(format=DatasetFormat.TEXT, skip_malformed=True), 64)
    assert "readme.md" in [s.source for s in text.samples]


def test_truncation_is_counted(tmp_path, tiny_tokenizer):
    path = write_jsonl(tmp_path / "data.jsonl", [{"instruction": "i", "output": "word " * 50}, {"text": "short"}])
    loaded = load_dataset(path, tiny_tokenizer, None, 24)
    assert loaded.truncated == 1
    assert len(loaded.samples[0]) == 24 and loaded.samples[0].labels[-1] != M
    assert any("truncated" in line for line in loaded.summary_lines())


def test_unknown_source_extension_needs_a_format(tmp_path, tiny_tokenizer):
    path = tmp_path / "data.xyz"
    path.write_text("hello", encoding="utf-8")
    with pytest.raises(ValueError, match="cannot tell the dataset format"):
        load_dataset(path, tiny_tokenizer)
    assert load_dataset(path, tiny_tokenizer, DataConfig(format=DatasetFormat.CODE), 64).samples[0].source == "data.xyz"


def test_chat_template_that_rejects_prefixes_falls_back_to_search(tmp_path):
    tok = make_tiny_tokenizer()
    tok.chat_template = (
        "{% if messages | length < 2 %}{{ raise_exception('need a full exchange') }}{% endif %}"
        "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endfor %}"
    )
    _, s = load_one(tmp_path, tok, {"prompt": "q", "completion": "a = 1"})
    assert (s.input_ids, s.labels) == expect(
        tok, ("<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n", False), ("a = 1<|im_end|>", True)
    )
