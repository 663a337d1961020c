"""A Qwen2 GGUF, whose q/k/v projections have biases, opens compactly with the file's biases."""

from __future__ import annotations

import pytest
import torch

from senior_intern.adapters.gguf_hf import write_hf_gguf
from senior_intern.models import load_base_model
from senior_intern.models.quantized import FrozenLinear
from tests.conftest import make_tiny_tokenizer


def _tiny_qwen2(seed: int = 0):
    import transformers

    torch.manual_seed(seed)
    config = transformers.Qwen2Config(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                                      rms_norm_eps=1e-6, rope_theta=10000.0, tie_word_embeddings=False, use_sliding_window=False)
    model = transformers.Qwen2ForCausalLM(config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias"):
                param.copy_(torch.randn(param.shape) * 0.5)  # biases that change the logits
    return model.eval()


@pytest.mark.parametrize("matrix_type", ["f32", "q8_0"])
def test_a_qwen2_gguf_keeps_its_qkv_biases(tmp_path, matrix_type):
    model = _tiny_qwen2()
    folder = tmp_path / "tokenizer"
    make_tiny_tokenizer().save_pretrained(folder)
    state = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    path = tmp_path / "qwen2.gguf"
    write_hf_gguf(path, model.config.to_dict(), state, matrix_type=matrix_type, hf_folder=folder)
    loaded = load_base_model(path, device="cpu", dtype="float32")
    q = loaded.model.model.layers[0].self_attn.q_proj
    assert isinstance(q, FrozenLinear) and q.bias is not None and not q.bias.is_meta
    assert torch.equal(q.bias, model.model.layers[0].self_attn.q_proj.bias)
    ids = torch.tensor([[1, 5, 9, 30, 77, 120]])
    with torch.no_grad():
        want, got = model(ids).logits, loaded.model(ids).logits
    tolerance = 1e-4 if matrix_type == "f32" else 0.2  # q8_0 rounds the weights, not the biases
    assert (got - want).abs().max() < tolerance
    if matrix_type == "f32":  # and without the biases the logits would be far off
        with torch.no_grad():
            for layer in model.model.layers:
                for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                    proj.bias.zero_()
            assert (loaded.model(ids).logits - model(ids).logits).abs().max() > 10 * tolerance
