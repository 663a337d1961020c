"""``models.load_tokenizer``: the tokenizer alone, never the weights; once per path; clear errors."""

from __future__ import annotations

import json

import pytest

from senior_intern import models
from senior_intern.cli import main
from tests.conftest import make_tiny_llama, make_tiny_tokenizer


@pytest.fixture(scope="module")
def hf_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-model-tok")
    make_tiny_tokenizer().save_pretrained(folder)
    make_tiny_llama().save_pretrained(folder)
    return folder


def test_loads_the_same_tokenizer_once_per_path(hf_model):
    first = models.load_tokenizer(hf_model)
    assert models.tokenizer_cached(hf_model)
    assert models.load_tokenizer(hf_model) is first
    assert first("hello").input_ids == make_tiny_tokenizer()("hello").input_ids


def test_a_folder_without_tokenizer_files_names_the_path(tmp_path):
    folder = tmp_path / "no-tokenizer"
    make_tiny_llama().save_pretrained(folder)
    with pytest.raises(ValueError, match="tokenizer") as err:
        models.load_tokenizer(folder)
    assert str(folder) in str(err.value)


def test_dataset_inspect_never_loads_the_weights(tmp_path, hf_model, capsys, monkeypatch):
    def no_weights(*args, **kwargs):
        raise AssertionError("dataset inspect loaded the whole model")

    monkeypatch.setattr(models, "load_base_model", no_weights)
    data = tmp_path / "data.jsonl"
    data.write_text(json.dumps({"instruction": "Say hello.", "output": "Hello!"}) + "\n", encoding="utf-8")
    assert main(["dataset", "inspect", str(data), "--model", str(hf_model), "--max-seq-length", "64"]) == 0
    assert "Records read: 1" in capsys.readouterr().out
