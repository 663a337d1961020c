"""Loading and inspecting Hugging Face model folders, with a tiny Llama saved in the test."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from senior_intern.models import ModelLoadError, content_hash, format_parameter_count, load_base_model, metadata
from tests.conftest import make_tiny_llama, make_tiny_tokenizer
from tests.models.conftest import save_tiny_folder


def test_tiny_llama_folder_loads_back_identically(tiny_folder):
    original = make_tiny_llama()
    loaded = load_base_model(tiny_folder)
    assert type(loaded.model).__name__ == "LlamaForCausalLM"
    assert not loaded.model.training
    assert not any(p.requires_grad for p in loaded.model.parameters())
    expected, actual = original.state_dict(), loaded.model.state_dict()
    assert expected.keys() == actual.keys()
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=0)
    ids = make_tiny_tokenizer()("def add(a, b):\n    return a + b\n", return_tensors="pt").input_ids  # (1, seq)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(ids).logits, original(ids).logits, rtol=0, atol=0)
    assert loaded.tokenizer.decode(ids[0]) == "def add(a, b):\n    return a + b\n"
    assert loaded.info.source_format == "hf" and loaded.info.dtype == "float32"
    assert loaded.info.load_seconds > 0


def test_metadata_of_tiny_llama_folder(tiny_folder):
    info = metadata(tiny_folder)
    model = make_tiny_llama()
    assert info.path == tiny_folder.resolve()
    assert (info.source_format, info.architecture, info.model_type) == ("hf", "LlamaForCausalLM", "llama")
    assert info.parameter_count == sum(p.numel() for p in model.parameters())
    assert (info.vocab_size, info.context_length, info.hidden_size, info.num_layers) == (300, 256, 64, 2)
    assert (info.num_attention_heads, info.num_kv_heads) == (4, 2)
    assert info.tie_word_embeddings is False
    assert info.file_size == (tiny_folder / "model.safetensors").stat().st_size
    assert info.dtype == "float32" and info.quantization is None
    assert info.has_chat_template is True
    assert info.load_seconds == 0.0
    assert info.content_hash == content_hash(tiny_folder)


def test_tied_embeddings_are_counted_once(tmp_path):
    folder = save_tiny_folder(tmp_path / "tied", tie_word_embeddings=True)
    info = metadata(folder)
    loaded = load_base_model(folder)
    assert info.tie_word_embeddings is True
    assert info.parameter_count == sum(p.numel() for p in loaded.model.parameters())


def test_sharded_folder_loads_and_counts_every_shard(tmp_path):
    folder = tmp_path / "sharded"
    original = make_tiny_llama()
    original.save_pretrained(folder, max_shard_size="100KB")
    make_tiny_tokenizer().save_pretrained(folder)
    shards = sorted(folder.glob("model-*.safetensors"))
    assert len(shards) > 1
    info = metadata(folder)
    assert info.parameter_count == sum(p.numel() for p in original.parameters())
    assert info.file_size == sum(s.stat().st_size for s in shards)
    loaded = load_base_model(folder)
    torch.testing.assert_close(loaded.model.lm_head.weight, original.lm_head.weight, rtol=0, atol=0)


@pytest.mark.parametrize(
    ("dtype", "expected"),
    [(None, torch.float32), ("auto", torch.float32), ("bfloat16", torch.bfloat16), (torch.float16, torch.float16)],
)
def test_dtype_choices(tiny_folder, dtype, expected):
    loaded = load_base_model(tiny_folder, dtype=dtype)
    assert all(p.dtype == expected for p in loaded.model.parameters())
    assert loaded.info.dtype == str(expected).removeprefix("torch.")


def test_bfloat16_folder_reports_its_stored_dtype(tmp_path):
    folder = tmp_path / "bf16"
    make_tiny_llama().to(torch.bfloat16).save_pretrained(folder)
    make_tiny_tokenizer().save_pretrained(folder)
    with safe_open(folder / "model.safetensors", "pt") as f:
        assert f.get_tensor("lm_head.weight").dtype == torch.bfloat16
    assert metadata(folder).dtype == "bfloat16"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dtype": "float8"}, "unknown dtype 'float8'"),
        ({"dtype": torch.int8}, "not a floating-point type"),
        ({"device": "toaster"}, "unknown device 'toaster'"),
    ],
)
def test_bad_dtype_or_device_is_a_value_error(tiny_folder, kwargs, message):
    with pytest.raises(ValueError, match=message):
        load_base_model(tiny_folder, **kwargs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_without_cuda_is_a_value_error(tiny_folder):
    with pytest.raises(ValueError, match="CUDA is not available"):
        load_base_model(tiny_folder, device="cuda")


def test_content_hash_changes_with_config_and_weights(tmp_path):
    a = save_tiny_folder(tmp_path / "a")
    b = save_tiny_folder(tmp_path / "b")
    c = save_tiny_folder(tmp_path / "c", seed=1)
    assert content_hash(a) == content_hash(b)  # same bytes in a different folder
    assert content_hash(a) != content_hash(c)
    before = content_hash(b)
    config = json.loads((b / "config.json").read_text())
    config["rms_norm_eps"] = config["rms_norm_eps"] * 10
    (b / "config.json").write_text(json.dumps(config))
    assert content_hash(b) != before


def test_format_parameter_count():
    assert [format_parameter_count(n) for n in (950, 12_300, 134_515_008, 1_240_000_000)] == [
        "950",
        "12.3K",
        "134.5M",
        "1.24B",
    ]


def test_auto_dtype_on_an_emulated_bf16_gpu_is_float16(monkeypatch):
    """A T4 reports bf16 support through emulation; the loader, like hardware.detect, picks float16."""
    import torch

    from senior_intern.models.loader import resolve_dtype

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    assert resolve_dtype("auto", torch.device("cuda", 0)) is torch.float16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert resolve_dtype("auto", torch.device("cuda", 0)) is torch.bfloat16
