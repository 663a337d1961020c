"""Fixtures for the model tests: a tiny Llama as a Hugging Face folder and as a GGUF file, and the
demo model loaded once per session from a cold cache."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import make_tiny_llama, make_tiny_tokenizer

# transformers parameter name (inside a decoder layer) -> GGUF tensor name
_LAYER_TENSORS = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
}
_TOP_TENSORS = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}


def save_tiny_folder(folder: Path, **overrides) -> Path:
    """Save ``make_tiny_llama(**overrides)`` and the tiny tokenizer as a Hugging Face folder."""
    make_tiny_llama(**overrides).save_pretrained(folder)
    make_tiny_tokenizer().save_pretrained(folder)
    return folder


def _rope_permute(weight: np.ndarray, n_heads: int) -> np.ndarray:
    """llama.cpp stores q/k rows per head as (pairs, 2) where transformers has (2, pairs)."""
    rows = weight.shape[0]
    return weight.reshape(n_heads, 2, rows // n_heads // 2, -1).swapaxes(1, 2).reshape(weight.shape)


def write_tiny_gguf(path: Path, seed: int = 0, drop: tuple[str, ...] = ()) -> Path:
    """Write ``make_tiny_llama(seed=seed)`` and the tiny tokenizer as a float32 Llama GGUF file,
    leaving out the GGUF tensors named in ``drop``."""
    import gguf

    model, tokenizer = make_tiny_llama(seed=seed), make_tiny_tokenizer()
    cfg = model.config
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_name("tiny llama")
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_rope_freq_base(10000.0)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
    merges = json.loads(tokenizer.backend_tokenizer.to_str())["model"]["merges"]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list([token for token, _ in vocab])
    writer.add_token_types([3 if token in tokenizer.all_special_tokens else 1 for token, _ in vocab])
    writer.add_token_merges([" ".join(m) if isinstance(m, list) else m for m in merges])
    writer.add_bos_token_id(tokenizer.bos_token_id)
    writer.add_eos_token_id(tokenizer.eos_token_id)
    writer.add_pad_token_id(tokenizer.pad_token_id)
    writer.add_chat_template(tokenizer.chat_template)
    for name, tensor in model.state_dict().items():
        array = tensor.detach().numpy()
        if name in _TOP_TENSORS:
            gguf_name = _TOP_TENSORS[name]
        else:
            _, _, layer, rest = name.split(".", 3)
            module = rest.removesuffix(".weight")
            gguf_name = f"blk.{layer}.{_LAYER_TENSORS[module]}.weight"
            if module == "self_attn.q_proj":
                array = _rope_permute(array, cfg.num_attention_heads)
            elif module == "self_attn.k_proj":
                array = _rope_permute(array, cfg.num_key_value_heads)
        if gguf_name not in drop:
            writer.add_tensor(gguf_name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture
def tiny_folder(tmp_path: Path) -> Path:
    """A tiny Llama (``make_tiny_llama()``) with the tiny tokenizer, as a Hugging Face folder."""
    return save_tiny_folder(tmp_path / "tiny-llama")


@pytest.fixture
def tiny_gguf(tmp_path: Path) -> Path:
    """The same tiny Llama written as a float32 GGUF file."""
    return write_tiny_gguf(tmp_path / "tiny-llama.gguf")


@pytest.fixture(scope="session")
def demo_first_load(demo_gguf: Path):
    """The demo GGUF loaded with a cold cache: (LoadedModel, CPU seconds of that load).

    A conversion left by an earlier test is removed first, so the time is that of a real
    conversion; later loads in the session come from the cache this one writes.
    """
    from senior_intern.models import cache, content_hash, load_base_model

    if cache.cached_conversion(content_hash(demo_gguf)) is not None:
        cache.remove_entry(content_hash(demo_gguf))
    started = time.process_time()  # CPU seconds: what a busy shared machine does not inflate
    loaded = load_base_model(demo_gguf)
    return loaded, time.process_time() - started
