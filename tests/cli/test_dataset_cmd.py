"""``senior-intern dataset inspect``: format, statistics and a marked sample; exit 2 on bad input."""

from __future__ import annotations

import json

import pytest

from senior_intern.cli import main
from tests.conftest import make_tiny_llama, make_tiny_tokenizer


@pytest.fixture(scope="module")
def hf_model(tmp_path_factory):
    """A Hugging Face model folder with the tiny tokenizer and the tiny Llama."""
    folder = tmp_path_factory.mktemp("tiny-model")
    make_tiny_tokenizer().save_pretrained(folder)
    make_tiny_llama().save_pretrained(folder)
    return folder


def test_inspect_prints_format_stats_and_a_marked_sample(tmp_path, hf_model, capsys):
    data = tmp_path / "data.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in [
        {"instruction": "Say hello.", "input": "", "output": "Hello, world!"},
        {"instruction": "Add.", "input": "1 and 2", "output": "3"},
        {"instruction": "Quit.", "output": "Bye."},
    ]) + "\n", encoding="utf-8")
    code = main(["dataset", "inspect", str(data), "--model", str(hf_model), "--max-seq-length", "64", "--batch-size", "2", "--no-packing"])
    out = capsys.readouterr().out
    assert code == 0
    assert "Format: alpaca (chat template)" in out
    assert "Records read: 3, skipped: 0, truncated: 0" in out
    assert "Samples: 3; tokens per sample: mean" in out
    assert "Batches per epoch: 2 (batch size 2, packing off;" in out
    assert "Length histogram (tokens):" in out
    assert "[[<|im_start|>user\nSay hello.<|im_end|>\n<|im_start|>assistant\n]]Hello, world!<|im_end|>" in out


def test_inspect_a_code_folder_with_packing(tmp_path, hf_model, capsys):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "app.py").write_text("def add(a, b):\n    return a + b\n", encoding="utf-8")
    (tmp_path / "src" / "blob.py").write_bytes(b"\x00binary")
    assert main(["dataset", "inspect", str(tmp_path / "src"), "--model", str(hf_model), "--max-seq-length", "64"]) == 0
    out = capsys.readouterr().out
    assert "Format: code" in out and "packing on: 1 rows of 64" in out
    assert "1 files skipped: blob.py (binary (contains NUL bytes))" in out
    assert "[[File: app.py\n]]def add(a, b):" in out


def test_inspect_bad_path_exits_2(tmp_path, hf_model, capsys):
    assert main(["dataset", "inspect", str(tmp_path / "missing.jsonl"), "--model", str(hf_model)]) == 2
    assert "Dataset not found" in capsys.readouterr().err


def test_inspect_malformed_data_exits_2_with_file_and_line(tmp_path, hf_model, capsys):
    data = tmp_path / "data.jsonl"
    data.write_text('{"text": "fine"}\n{"text": oops}\n', encoding="utf-8")
    assert main(["dataset", "inspect", str(data), "--model", str(hf_model)]) == 2
    assert "data.jsonl:2: malformed JSON (Expecting value: column 10)" in capsys.readouterr().err
    assert main(["dataset", "inspect", str(data), "--model", str(hf_model), "--skip-malformed"]) == 0
    assert "1 records skipped" in capsys.readouterr().out


def test_inspect_missing_model_exits_2(tmp_path, capsys):
    data = tmp_path / "data.jsonl"
    data.write_text('{"text": "fine"}\n', encoding="utf-8")
    assert main(["dataset", "inspect", str(data), "--model", str(tmp_path / "no-model")]) == 2
    assert "Model not found" in capsys.readouterr().err


def test_inspect_with_a_column_map_and_a_bad_one(tmp_path, hf_model, capsys):
    data = tmp_path / "qa.jsonl"
    data.write_text(json.dumps({"question": "Say hello.", "answer": "Hello!"}) + "\n", encoding="utf-8")
    args = ["dataset", "inspect", str(data), "--model", str(hf_model), "--max-seq-length", "64"]
    assert main(args + ["--column-map", "question=prompt", "answer=completion"]) == 0
    assert "Format: prompt_completion" in capsys.readouterr().out
    assert main(args + ["--column-map", "question"]) == 2
    assert "data.column_map entry 'question' is not FROM=TO" in capsys.readouterr().err
