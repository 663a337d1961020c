"""The demo model (SmolLM2-135M, Q4_1 GGUF) held compact: exactly the float32 path's numbers."""

from __future__ import annotations

import pytest
import torch

from senior_intern.config import LoraConfig, TrainingConfig
from senior_intern.lora import LoraModel
from senior_intern.models import load_base_model
from senior_intern.models.quantized import FrozenEmbedding, FrozenLinear, compact_bytes
from senior_intern.training.forward import CausalLMForward
from senior_intern.training.prepare import prepare_for_training

TEXT = "def add(a, b):\n    return a + b\n\nclass Point:\n    def __init__(self, x, y):\n        self.x = x\n"


@pytest.fixture(scope="module")
def both(demo_gguf):
    """(compact LoadedModel, float32 LoadedModel, progress events of the compact open)."""
    events = []
    compact = load_base_model(demo_gguf, progress=lambda done, total: events.append((done, total)))
    dense = load_base_model(demo_gguf, gguf_compact=False)
    return compact, dense, events


def test_every_decoder_linear_stays_in_its_gguf_blocks(both):
    compact, dense, events = both
    head, embedding = compact.model.get_output_embeddings(), compact.model.get_input_embeddings()
    linears = [m for m in compact.model.modules() if isinstance(m, FrozenLinear) and m is not head]
    assert len(linears) == 30 * 7 and {m.kind for m in linears} == {"Q4_1"}
    # the tied embedding stays in its blocks too, and the head reads the same bytes
    assert isinstance(embedding, FrozenEmbedding) and isinstance(head, FrozenLinear)
    assert head.qdata is embedding.qdata and (head.out_features, head.in_features) == (49152, 576)
    torch.testing.assert_close(embedding.weight, dense.model.get_input_embeddings().weight, rtol=0, atol=0)
    assert compact.info.base_held == "gguf" and dense.info.base_held == "float"
    packed, other = compact_bytes(compact.model)
    dense_bytes = sum(p.numel() * 4 for p in dense.model.parameters())
    assert packed + other < 0.45 * dense_bytes  # Q4_1 is 5 bits a weight against 32
    assert events[0] == (0, 272) and events[-1] == (272, 272)
    assert all(b[0] >= a[0] for a, b in zip(events, events[1:]))


def test_logits_equal_the_float32_path(both):
    compact, dense, _ = both
    ids = compact.tokenizer(TEXT, return_tensors="pt").input_ids
    assert ids.tolist() == dense.tokenizer(TEXT, return_tensors="pt").input_ids.tolist()
    with torch.no_grad():
        torch.testing.assert_close(compact.model(ids).logits, dense.model(ids).logits, rtol=0, atol=1e-5)


def _step(model, ids):
    lora = LoraModel(model, LoraConfig(rank=8, alpha=16, dropout=0.0))
    for i, p in enumerate(lora.lora_parameters()):
        with torch.no_grad():
            p.normal_(0, 0.02, generator=torch.Generator().manual_seed(i))
    lora.train()
    prep = prepare_for_training(model, TrainingConfig())
    forward = CausalLMForward(model)
    assert len(prep.fused_mlps) == 30  # the compact base runs through the fused MLP function too
    parts = forward({"input_ids": ids}, ids)
    loss = parts.loss_sum / parts.n_valid
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    lora.unwrap()
    return loss.item(), grads


def test_one_training_step_gives_the_same_loss_and_lora_gradients(both):
    compact, dense, _ = both
    ids = compact.tokenizer(TEXT, return_tensors="pt").input_ids
    loss_c, grads_c = _step(compact.model, ids)
    loss_d, grads_d = _step(dense.model, ids)
    assert abs(loss_c - loss_d) < 1e-5
    assert grads_c.keys() == grads_d.keys() and len(grads_c) == 2 * 30 * 7
    for name in grads_c:
        torch.testing.assert_close(grads_c[name], grads_d[name], rtol=1e-4, atol=1e-5)


def test_merging_dequantises_only_the_merged_layers(both):
    compact, _, _ = both
    lora = LoraModel(compact.model, LoraConfig(rank=4, target_modules=("q_proj",)))
    with torch.no_grad():
        for p in lora.lora_parameters():
            p.fill_(0.01)
    ids = compact.tokenizer(TEXT, return_tensors="pt").input_ids
    with torch.no_grad():
        before = compact.model(ids).logits
        lora.merge()
        merged = compact.model(ids).logits
    layer = compact.model.model.layers[0].self_attn
    assert type(layer.q_proj.base_layer) is torch.nn.Linear and isinstance(layer.k_proj, FrozenLinear)
    torch.testing.assert_close(merged, before, rtol=1e-4, atol=1e-3)
    lora.unwrap()


def test_wrapping_a_compact_base_dequantises_nothing(both, monkeypatch):
    # Looking for tied weights once read every base weight at once: 4 bytes a parameter held
    # together (600 MB on the demo model, 32 GB on an 8B one) before the first step.
    compact, _, _ = both
    calls = []
    real = FrozenLinear.dequantized
    monkeypatch.setattr(FrozenLinear, "dequantized", lambda self, dtype=None: calls.append(self) or real(self, dtype))
    lora = LoraModel(compact.model, LoraConfig(rank=4))
    try:
        assert calls == [] and len(lora.lora_layers()) == 30 * 7
    finally:
        lora.unwrap()
