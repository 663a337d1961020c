"""Fused gated MLP: the unfused model's loss and gradients, less saved memory, safe fallbacks."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from senior_intern.config import LoraConfig
from senior_intern.lora import LoraModel
from senior_intern.lora.fused_mlp import fuse_mlps, unfuse_mlps
from tests.conftest import make_tiny_llama

IDS = torch.randint(0, 300, (2, 24), generator=torch.Generator().manual_seed(0))


def tiny(bias: str = "none", dropout: float = 0.5, fuse: bool = True, **overrides):
    torch.manual_seed(0)
    model = make_tiny_llama(**overrides)
    lora = LoraModel(model, LoraConfig(rank=4, dropout=dropout, bias=bias))
    with torch.no_grad():
        for p in lora.lora_parameters():  # B != 0, so the LoRA path matters
            p.normal_(0, 0.1, generator=torch.Generator().manual_seed(p.numel()))
    fused = fuse_mlps(model) if fuse else []
    return model, lora, fused


def loss_and_grads(model, lora, seed: int = 123):
    lora.train()
    torch.manual_seed(seed)
    loss = lora(input_ids=IDS, labels=IDS).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("bias", ["none", "lora_only", "all"])
def test_fused_step_equals_the_unfused_step(bias):
    fused_model, fused_lora, names = tiny(bias)
    assert names == ["model.layers.0.mlp", "model.layers.1.mlp"]
    plain_model, plain_lora, _ = tiny(bias, fuse=False)
    fused_loss, fused_grads = loss_and_grads(fused_model, fused_lora)
    plain_loss, plain_grads = loss_and_grads(plain_model, plain_lora)
    assert_close(fused_loss, plain_loss, atol=1e-5, rtol=1e-5)
    assert fused_grads.keys() == plain_grads.keys()
    for name in plain_grads:
        assert_close(fused_grads[name], plain_grads[name], atol=1e-5, rtol=1e-5)


def test_unfuse_restores_the_modules_own_forward():
    model, lora, names = tiny()
    assert fuse_mlps(model) == []  # already fused: nothing new
    assert unfuse_mlps(model) == len(names)
    assert all("forward" not in vars(m) for m in model.modules())
    assert unfuse_mlps(model) == 0


class SwappedMLP(nn.Module):
    """Looks like a gated MLP but multiplies the other way round: must not be fused."""

    def __init__(self) -> None:
        super().__init__()
        self.gate_proj, self.up_proj, self.down_proj = nn.Linear(8, 16), nn.Linear(8, 16), nn.Linear(16, 8)

    def forward(self, x):
        return self.down_proj(torch.sigmoid(self.up_proj(x)) * self.gate_proj(x))


def test_a_module_that_computes_something_else_is_left_alone():
    model = nn.Sequential(SwappedMLP())
    LoraModel(model, LoraConfig(rank=2, target_modules=["gate_proj", "up_proj", "down_proj"]))
    assert fuse_mlps(model) == []


def test_the_check_runs_once_per_kind_of_mlp(monkeypatch):
    from senior_intern.lora import fused_mlp

    checked = []
    real = fused_mlp._computes_swiglu
    monkeypatch.setattr(fused_mlp, "_computes_swiglu", lambda m: checked.append(m) or real(m))
    _, _, names = tiny()
    assert names == ["model.layers.0.mlp", "model.layers.1.mlp"] and len(checked) == 1
    checked.clear()
    model, _, _ = tiny(fuse=False)
    model.model.layers[1].mlp.act_fn = nn.GELU()  # another activation: its own check, not fused
    assert fuse_mlps(model) == ["model.layers.0.mlp"] and len(checked) == 2


def test_merged_disabled_and_eval_runs_match_the_unfused_model():
    fused_model, fused_lora, _ = tiny()
    plain_model, plain_lora, _ = tiny(fuse=False)
    for action in (None, "merge", "disable"):
        for lora in (fused_lora, plain_lora):
            lora.eval()
            if action:
                getattr(lora, action)()
        with torch.no_grad():
            assert_close(fused_lora(input_ids=IDS).logits, plain_lora(input_ids=IDS).logits, atol=1e-5, rtol=1e-5)


def test_saved_activations_of_the_fused_mlp_are_smaller():
    def saved_bytes(model, lora):
        lora.train()
        seen: dict[int, int] = {}

        def pack(t):
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            lora(input_ids=IDS, labels=IDS)
        return sum(seen.values())

    fused = saved_bytes(*tiny()[:2])
    plain = saved_bytes(*tiny(fuse=False)[:2])
    # per MLP at [48 tokens, hidden 64, intermediate 128] the unfused graph keeps silu(g) and the
    # product ([48, 128] each) plus a dropped copy of every LoRA input; the fused one none of them
    assert plain - fused >= 2 * (2 * 48 * 128 * 4)


def test_gradient_checkpointing_recomputes_the_fused_mlp_with_the_same_masks():
    from tests.lora.test_llama import enable_checkpointing

    model, lora, _ = tiny()
    _, plain = loss_and_grads(model, lora)
    model2, lora2, _ = tiny()
    enable_checkpointing(model2)
    _, checkpointed = loss_and_grads(model2, lora2)
    for name in plain:
        assert_close(checkpointed[name], plain[name], atol=1e-6, rtol=1e-5)


def test_mixed_dtypes_fall_back_to_the_modules_forward():
    torch.manual_seed(0)
    model = make_tiny_llama().to(torch.bfloat16)
    lora = LoraModel(model, LoraConfig(rank=4), dtype=torch.float32)
    assert len(fuse_mlps(model)) == 2  # the check passes in eval mode; calls still fall back
    lora.train()
    loss = lora(input_ids=IDS, labels=IDS).loss
    loss.backward()
    assert all(p.grad is not None for p in lora.lora_parameters())
