"""``senior-intern model info``."""

from __future__ import annotations

from senior_intern.cli import main
from tests.models.conftest import save_tiny_folder


def test_model_info_on_the_demo_gguf(demo_gguf, capsys):
    assert main(["model", "info", str(demo_gguf)]) == 0
    out = capsys.readouterr().out
    lines = dict(line.split(":", 1) for line in out.splitlines())
    values = {key: value.strip() for key, value in lines.items()}
    assert values["Architecture"] == "LlamaForCausalLM (llama)"
    assert values["Parameters"] == "134.5M (134,515,008)"
    assert values["Vocabulary"] == "49152 tokens"
    assert values["Context"] == "8192 tokens"
    assert values["Layers"] == "30"
    assert values["Hidden size"] == "576"
    assert values["Attention heads"] == "9 (3 key/value)"
    assert values["Size on disk"] == "93.8 MB"
    assert values["Quantization"] == "Q4_1"
    assert values["Format"] == "GGUF"
    assert len(values["Hash"]) == 16


def test_model_info_on_a_folder(tmp_path, capsys):
    folder = save_tiny_folder(tmp_path / "tiny")
    assert main(["model", "info", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "Hugging Face folder" in out
    assert "Quantization:    none" in out
    assert "Layers:          2" in out


def test_model_info_on_a_missing_path_exits_2(tmp_path, capsys):
    missing = tmp_path / "no-such-model.gguf"
    assert main(["model", "info", str(missing)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip() == f"error: {missing}: model not found (no such file or folder)"
