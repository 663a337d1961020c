"""Every bad model input gives a one-line ``ModelLoadError`` that names the path and the problem."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from safetensors.torch import load_file, save_file

from senior_intern import paths
from senior_intern.models import ModelLoadError, load_base_model, metadata
from senior_intern.models.gguf_header import read_gguf_header
from tests.conftest import make_tiny_llama, make_tiny_tokenizer
from tests.models.conftest import save_tiny_folder, write_tiny_gguf

BERT_CONFIG = {
    "architectures": ["BertForMaskedLM"],
    "model_type": "bert",
    "vocab_size": 300,
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 128,
    "max_position_embeddings": 128,
}


def _expect(path: Path, *fragments: str, names: Path | None = None) -> str:
    """Both entry points, given ``path``, fail with one line that names ``names`` (default: the
    path itself) and contains ``fragments``."""
    messages = []
    for call in (metadata, load_base_model):
        with pytest.raises(ModelLoadError) as caught:
            call(path)
        message = str(caught.value)
        assert "\n" not in message
        assert message.startswith(str(names or path))
        for fragment in fragments:
            assert fragment in message
        messages.append(message)
    return messages[0]


def test_missing_path(tmp_path):
    _expect(tmp_path / "nowhere", "model not found")


def test_model_load_error_is_a_value_error():
    assert issubclass(ModelLoadError, ValueError)


def test_file_that_is_not_a_model(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    _expect(path, "not a model")


def test_folder_without_config(tmp_path):
    folder = save_tiny_folder(tmp_path / "m")
    (folder / "config.json").unlink()
    _expect(folder, "no config.json")


def test_config_that_is_not_json(tmp_path):
    folder = save_tiny_folder(tmp_path / "m")
    (folder / "config.json").write_text("{not json")
    _expect(folder, "not valid JSON", names=folder / "config.json")


def test_folder_without_weights(tmp_path):
    folder = save_tiny_folder(tmp_path / "m")
    (folder / "model.safetensors").unlink()
    _expect(folder, "no weights", "model.safetensors")


def test_folder_with_only_pickle_weights(tmp_path):
    folder = save_tiny_folder(tmp_path / "m")
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    _expect(folder, "safetensors only")


def test_folder_with_a_missing_shard(tmp_path):
    folder = tmp_path / "m"
    make_tiny_llama().save_pretrained(folder, max_shard_size="100KB")
    make_tiny_tokenizer().save_pretrained(folder)
    shard = sorted(folder.glob("model-*.safetensors"))[-1]
    shard.unlink()
    _expect(folder, shard.name, "is missing")


def test_folder_without_tokenizer(tmp_path):
    folder = save_tiny_folder(tmp_path / "m")
    (folder / "tokenizer.json").unlink()
    _expect(folder, "no tokenizer files")


def test_truncated_safetensors(tmp_path):
    folder = save_tiny_folder(tmp_path / "m")
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    message = _expect(folder, "truncated or corrupt safetensors file", str(weights))
    assert "copy or download it again" in message


def test_safetensors_with_garbage_header(tmp_path):
    folder = save_tiny_folder(tmp_path / "m")
    weights = folder / "model.safetensors"
    weights.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00" + b"this is no json!" + b"\x00" * 64)
    _expect(folder, "truncated or corrupt safetensors file", str(weights), "not valid JSON")


def test_safetensors_too_short_for_its_header(tmp_path):
    folder = save_tiny_folder(tmp_path / "m")
    weights = folder / "model.safetensors"
    weights.write_bytes(b"\x00\x01")
    _expect(folder, "truncated or corrupt safetensors file", str(weights), "bad header length")


def test_truncated_demo_gguf(tmp_path, demo_gguf):
    path = tmp_path / "demo-truncated.gguf"
    with open(demo_gguf, "rb") as src:
        path.write_bytes(src.read(4 * 1024 * 1024))
    _expect(path, "truncated GGUF file", "copy or download it again")


def test_gguf_cut_inside_its_header(tmp_path, demo_gguf):
    path = tmp_path / "demo-cut.gguf"
    with open(demo_gguf, "rb") as src:
        path.write_bytes(src.read(100_000))  # inside the vocabulary
    _expect(path, "truncated GGUF file", "header runs past the end")


def test_file_named_gguf_that_is_not_gguf(tmp_path):
    path = tmp_path / "fake.gguf"
    path.write_bytes(b"PK\x03\x04" + b"\x00" * 100)
    _expect(path, "not a GGUF file")


def test_tiny_file_named_gguf(tmp_path):
    path = tmp_path / "empty.gguf"
    path.write_bytes(b"")
    _expect(path, "not a GGUF file")


def test_unsupported_gguf_version(tmp_path, tiny_gguf):
    data = bytearray(tiny_gguf.read_bytes())
    data[4:8] = (99).to_bytes(4, "little")
    tiny_gguf.write_bytes(bytes(data))
    _expect(tiny_gguf, "GGUF version 99 is not supported")


def test_unsupported_gguf_architecture(tmp_path, tiny_gguf):
    data = tiny_gguf.read_bytes()
    # Same length, so the header stays valid: "llama" -> "lla_x" everywhere (the architecture and its keys).
    tiny_gguf.write_bytes(data.replace(b"llama", b"lla_x"))
    assert read_gguf_header(tiny_gguf).architecture == "lla_x"
    _expect(tiny_gguf, "unsupported model_type 'lla_x'")


def test_bert_config_is_not_a_causal_lm(tmp_path):
    folder = save_tiny_folder(tmp_path / "bert")
    (folder / "config.json").write_text(json.dumps(BERT_CONFIG))
    _expect(folder, "not a causal language model", "(architectures: BertForMaskedLM)")


def test_config_without_architectures_falls_back_to_the_model_type(tmp_path):
    folder = save_tiny_folder(tmp_path / "m")
    config = json.loads((folder / "config.json").read_text())
    del config["architectures"]
    (folder / "config.json").write_text(json.dumps(config))
    assert metadata(folder).architecture == "LlamaForCausalLM"
    config["model_type"] = "vit"  # known to transformers, but has no causal LM
    (folder / "config.json").write_text(json.dumps(config))
    _expect(folder, "not a causal language model", "(model_type: vit)")


def test_unknown_model_type(tmp_path):
    folder = save_tiny_folder(tmp_path / "m")
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "llama_from_the_future"
    (folder / "config.json").write_text(json.dumps(config))
    _expect(folder, "unsupported model_type 'llama_from_the_future'")


def test_config_without_model_type(tmp_path):
    folder = save_tiny_folder(tmp_path / "m")
    (folder / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    _expect(folder, "no model_type", names=folder / "config.json")


def test_config_transformers_cannot_build(tmp_path):
    folder = save_tiny_folder(tmp_path / "m")
    config = json.loads((folder / "config.json").read_text())
    config["hidden_size"] = "wide"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError) as caught:
        load_base_model(folder)
    assert str(folder) in str(caught.value) and "\n" not in str(caught.value)


def test_folder_whose_weights_lack_a_tensor(tmp_path):
    folder = save_tiny_folder(tmp_path / "m")
    weights = load_file(folder / "model.safetensors")
    del weights["model.layers.1.mlp.up_proj.weight"]
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    assert metadata(folder).parameter_count < sum(p.numel() for p in make_tiny_llama().parameters())
    with pytest.raises(ModelLoadError) as caught:
        load_base_model(folder)
    assert str(caught.value) == (
        f"{folder.resolve()}: the weight files lack 1 tensor(s) the model needs "
        "(model.layers.1.mlp.up_proj.weight); the weights do not belong to this config"
    )


def test_gguf_that_lacks_tensors_is_not_converted(tmp_path, monkeypatch):
    monkeypatch.setenv("SENIOR_INTERN_HOME", str(tmp_path / "home"))
    path = write_tiny_gguf(tmp_path / "partial.gguf", drop=("blk.0.ffn_up.weight", "blk.1.ffn_up.weight"))
    with pytest.raises(ModelLoadError, match="lack 2 tensor") as caught:
        load_base_model(path)
    assert str(caught.value).startswith(str(path))
    assert not [p for p in paths.model_cache_dir().iterdir() if p.name.startswith(".tmp")]  # nothing half-written


def test_weights_that_do_not_fit_the_config(tmp_path):
    folder = save_tiny_folder(tmp_path / "m")
    other = save_tiny_folder(tmp_path / "other", hidden_size=32, intermediate_size=64)
    shutil.copy(other / "model.safetensors", folder / "model.safetensors")
    with pytest.raises(ModelLoadError, match="could not load the model") as caught:
        load_base_model(folder)
    assert str(folder) in str(caught.value) and "\n" not in str(caught.value)
