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


def test_model_info_says_how_the_demo_gguf_is_held(demo_gguf, capsys):
    assert main(["model", "info", str(demo_gguf)]) == 0
    out = capsys.readouterr().out
    assert "Held as:         compact: the GGUF file's own blocks, dequantised per layer" in out
    assert "  Q4_1:          210 weight matrices, 63.3 MB" in out
    assert "  Q8_0:          1 weight matrix, 28.7 MB" in out  # the token embedding, also the tied head
    assert "In memory:       92.1 MB with float32, 92.0 MB with bfloat16" in out


def test_model_info_on_a_folder_with_int4(tmp_path, capsys):
    folder = save_tiny_folder(tmp_path / "tiny")
    assert main(["model", "info", str(folder), "--base-quantization", "int4"]) == 0
    out = capsys.readouterr().out
    assert "Held as:         compact: int4, quantised at load" in out
    assert "  int4:          14 weight matrices" in out
    assert main(["model", "info", str(folder)]) == 0
    assert "Held as:         dense floats" in capsys.readouterr().out
