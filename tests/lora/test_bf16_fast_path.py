"""bfloat16 takes the fused paths (issue #16, item 4): float32 master factors under a bfloat16
base run the fused LoRA and MLP functions in bfloat16 and get float32 gradients."""

from __future__ import annotations

import pytest
import torch

from senior_intern.config import LoraConfig
from senior_intern.lora import LoraModel, functional, fused_mlp
from senior_intern.lora.layer import LoraLayer
from tests.conftest import make_tiny_llama


def _lora(dtype: torch.dtype, dropout: float = 0.0):
    model = make_tiny_llama(seed=4).to(dtype)
    lora = LoraModel(model, LoraConfig(rank=4, alpha=8.0, dropout=dropout, target_modules=["all-linear"]), dtype=torch.float32)
    with torch.no_grad():
        for p in lora.lora_parameters():
            p.normal_(0.0, 0.1, generator=torch.Generator().manual_seed(p.numel()))
    lora.train()
    return model, lora


def test_float32_factors_under_a_bfloat16_base_are_fused() -> None:
    model, _ = _lora(torch.bfloat16)
    layer = next(m for m in model.modules() if isinstance(m, LoraLayer))
    assert layer.lora_A.weight.dtype == torch.float32 and layer.base_layer.weight.dtype == torch.bfloat16
    assert layer.fused_ok(torch.zeros(2, layer.in_features, dtype=torch.bfloat16))
    assert not layer.fused_ok(torch.zeros(2, layer.in_features, dtype=torch.float32))  # input and base differ


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_bfloat16_fused_step_matches_float32_within_bfloat16_tolerance(monkeypatch, dropout) -> None:
    from senior_intern.config import TrainingConfig
    from senior_intern.training.forward import CausalLMForward
    from senior_intern.training.prepare import prepare_for_training

    calls = {"linear": 0, "mlp": 0}
    real_linear, real_mlp = functional.LoraLinearFunction.apply, fused_mlp.SwiGluFunction.apply
    monkeypatch.setattr(functional.LoraLinearFunction, "apply",
                        staticmethod(lambda *a: calls.__setitem__("linear", calls["linear"] + 1) or real_linear(*a)))
    monkeypatch.setattr(fused_mlp.SwiGluFunction, "apply",
                        staticmethod(lambda *a: calls.__setitem__("mlp", calls["mlp"] + 1) or real_mlp(*a)))
    ids = torch.randint(1, 300, (2, 24), generator=torch.Generator().manual_seed(1))
    labels = ids.clone()
    results = {}
    for dtype in (torch.float32, torch.bfloat16):
        model, lora = _lora(dtype, dropout)
        prep = prepare_for_training(model, TrainingConfig())
        forward = CausalLMForward(model, chunk_size=16)
        assert len(prep.fused_mlps) == 2
        for k in calls:
            calls[k] = 0
        torch.manual_seed(3)  # the same drop plans in both runs
        parts = forward({"input_ids": ids}, labels)
        parts.loss_sum.backward()
        assert calls == {"linear": 2 * 4, "mlp": 2}  # q, k, v, o per layer; one fused MLP per layer
        grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
        assert all(g.dtype == torch.float32 for g in grads.values())  # the master factors' dtype
        results[dtype] = (parts.loss_sum.detach().float(), grads)
    loss32, grads32 = results[torch.float32]
    loss16, grads16 = results[torch.bfloat16]
    torch.testing.assert_close(loss16, loss32, rtol=2e-2, atol=0.0)
    for name, g in grads32.items():
        err = (grads16[name] - g).norm() / g.norm().clamp_min(1e-12)
        assert err < 0.08, f"{name}: relative error {float(err):.3f}"
