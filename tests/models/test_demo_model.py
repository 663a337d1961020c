"""The real demo model (SmolLM2-135M-Instruct, Q4_1 GGUF): metadata, conversion, cache, real weights."""

from __future__ import annotations

import json
import time

import pytest
import torch

from senior_intern.models import cache, load_base_model, metadata
from senior_intern.models.quantized import FrozenLinear

pytestmark = pytest.mark.slow

PASSAGE = (
    "The sun rose slowly over the quiet village. Children walked to school while their parents "
    "opened the shops along the main street. By noon the market was full of people buying fresh "
    "bread, fruit and vegetables for the week."
)


def test_metadata_reads_the_header_quickly(demo_gguf):
    metadata(demo_gguf)  # first sight hashes the file (about 0.3 s for 94 MB)
    started = time.perf_counter()
    info = metadata(demo_gguf)
    seconds = time.perf_counter() - started
    assert seconds < 1.0, f"metadata took {seconds:.2f} s"
    assert info.source_format == "gguf"
    assert (info.model_type, info.architecture) == ("llama", "LlamaForCausalLM")
    assert (info.num_layers, info.hidden_size, info.vocab_size, info.context_length) == (30, 576, 49152, 8192)
    assert (info.num_attention_heads, info.num_kv_heads) == (9, 3)
    assert info.tie_word_embeddings is True
    assert info.parameter_count == 134_515_008 and info.parameters_label == "134.5M"
    assert info.quantization == "Q4_1" and info.dtype == "q4_1"
    assert info.file_size == demo_gguf.stat().st_size
    assert info.has_chat_template is True
    assert info.load_seconds == 0.0
    assert len(info.content_hash) == 40


def test_demo_loads_from_gguf_frozen_in_eval_mode(demo_first_load, demo_gguf):
    loaded, _ = demo_first_load
    model, info = loaded.model, loaded.info
    assert type(model).__name__ == "LlamaForCausalLM"
    assert not model.training
    assert not any(p.requires_grad for p in model.parameters())
    assert all(p.device.type == "cpu" and p.dtype == torch.float32 for p in model.parameters())
    compact = sum(m.in_features * m.out_features for m in model.modules() if isinstance(m, FrozenLinear))
    assert sum(p.numel() for p in model.parameters()) + compact == info.parameter_count == 134_515_008
    assert info.base_held == "gguf"
    assert model.lm_head.qdata is model.model.embed_tokens.qdata  # tied: the head reads the embedding's blocks
    assert info.path == demo_gguf and info.source_format == "gguf" and info.dtype == "float32"
    assert info.content_hash == metadata(demo_gguf).content_hash
    assert info.load_seconds > 0


def test_demo_tokenizer_round_trips_text(demo_first_load):
    tokenizer = demo_first_load[0].tokenizer
    text = "def greet(name):\n    return f'Hello, {name}!'  # café ✓"
    ids = tokenizer(text, add_special_tokens=False).input_ids
    assert len(ids) < len(text)
    assert tokenizer.decode(ids) == text
    assert tokenizer.eos_token == "<|im_end|>"
    chat = tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False)
    assert "<|im_start|>user\nHi<|im_end|>" in chat


def test_demo_weights_are_real_language_model_weights(demo_first_load):
    loaded = demo_first_load[0]
    ids = loaded.tokenizer(PASSAGE, return_tensors="pt").input_ids  # (1, seq)
    shuffled = ids[:, torch.randperm(ids.shape[1], generator=torch.Generator().manual_seed(0))]
    with torch.no_grad():
        real = loaded.model(ids, labels=ids).loss.item()
        scrambled = loaded.model(shuffled, labels=shuffled).loss.item()
    assert real < 4.0
    assert scrambled > real + 3.0


def test_second_load_comes_from_the_cache_and_is_faster(demo_first_load, demo_gguf):
    first, first_seconds = demo_first_load
    folder = cache.cached_conversion(first.info.content_hash)
    assert folder is not None
    record = json.loads((folder / cache.SOURCE_FILE).read_text())
    assert record["source"] == str(demo_gguf) and record["hash"] == first.info.content_hash
    assert record["size"] == demo_gguf.stat().st_size
    started = time.process_time()
    second = load_base_model(demo_gguf)
    second_seconds = time.process_time() - started
    # The cache saves reading the config and tokenizer (about 0.7 s of CPU since they are read
    # in one fast pass, gguf_fields.py); the first open's time is checked in test_gguf_fields.py.
    assert second_seconds < first_seconds, (first_seconds, second_seconds)
    assert second.info.content_hash == first.info.content_hash
    torch.testing.assert_close(second.model.model.norm.weight, first.model.model.norm.weight, rtol=0, atol=0)
    down = [loaded.model.model.layers[7].mlp.down_proj.weight for loaded in (first, second)]
    torch.testing.assert_close(down[1], down[0], rtol=0, atol=0)


def test_demo_loads_in_bfloat16_from_the_cache(demo_first_load, demo_gguf):
    loaded = load_base_model(demo_gguf, dtype="bfloat16")
    assert loaded.info.dtype == "bfloat16"
    assert all(p.dtype == torch.bfloat16 for p in loaded.model.parameters())
    reference = demo_first_load[0].model.model.norm.weight.to(torch.bfloat16)
    torch.testing.assert_close(loaded.model.model.norm.weight, reference, rtol=0, atol=0)
