"""LoRA dropout: exact Bernoulli masks, the 1/(1-p) scale, eval determinism, fresh masks per call."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from senior_intern.config import LoraConfig
from senior_intern.lora import LoraLayer, keep_mask


@pytest.mark.parametrize("p", [0.05, 0.1, 0.3, 0.5, 0.75, 1 / 256, 0.999])
def test_keep_mask_drops_each_element_with_probability_p(p):
    torch.manual_seed(0)
    like = torch.empty(64, 4099)  # numel not a multiple of 8
    masks = torch.stack([keep_mask(like, p) for _ in range(4)])
    assert masks.dtype == torch.uint8 and masks.shape == (4, 64, 4099)
    assert set(masks.unique().tolist()) <= {0, 1}
    n = masks.numel()
    dropped = 1.0 - masks.double().mean().item()
    assert dropped == pytest.approx(p, abs=5 * math.sqrt(p * (1 - p) / n) + 1e-9)


def test_keep_mask_elements_are_independent():
    torch.manual_seed(1)
    p = 0.3
    drop = 1 - keep_mask(torch.empty(2000, 1024), p).double()
    n = drop[:, :-1].numel()
    # neighbours share a random word: P(both dropped) must still be p^2
    both = (drop[:, :-1] * drop[:, 1:]).mean().item()
    assert both == pytest.approx(p * p, abs=5 * math.sqrt(p * p * (1 - p * p) / n))
    # every byte position within a word drops at rate p
    per_position = drop.view(-1, 8).mean(0)
    assert torch.all((per_position - p).abs() < 0.01)


def test_keep_mask_edge_cases_and_reproducibility():
    like = torch.empty(3, 5, 7)
    assert torch.all(keep_mask(like, 0.0) == 1)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        keep_mask(like, 1.0)
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    assert torch.equal(keep_mask(like, 0.05, g1), keep_mask(like, 0.05, g2))
    assert not torch.equal(keep_mask(torch.empty(1000), 0.5), keep_mask(torch.empty(1000), 0.5))


def identity_layer(p: float, size: int = 8) -> LoraLayer:
    """in = out = rank = size, A = B = I, alpha = rank: the LoRA update is dropout(x) itself."""
    base = nn.Linear(size, size, bias=False)
    layer = LoraLayer(base, LoraConfig(rank=size, alpha=float(size), dropout=p))
    with torch.no_grad():
        base.weight.zero_()
        layer.lora_A.weight.copy_(torch.eye(size))
        layer.lora_B.weight.copy_(torch.eye(size))
    return layer


def test_train_mode_drops_about_p_of_the_lora_input_and_scales_the_rest():
    torch.manual_seed(0)
    p = 0.5
    layer = identity_layer(p).train()
    out = layer(torch.ones(4096, 8))
    values = set(torch.round(out, decimals=4).unique().tolist())
    assert values == {0.0, 2.0}  # dropped, or kept and scaled by 1 / (1 - p)
    dropped = (out == 0).double().mean().item()
    assert dropped == pytest.approx(p, abs=5 * math.sqrt(p * (1 - p) / out.numel()))


def test_eval_mode_is_deterministic_and_undropped():
    layer = identity_layer(0.5).eval()
    x = torch.randn(16, 8)
    assert_close(layer(x), x)
    assert torch.equal(layer(x), layer(x))


def test_masks_differ_between_calls_and_between_modules():
    torch.manual_seed(0)
    first, second = identity_layer(0.3).train(), identity_layer(0.3).train()
    x = torch.ones(64, 8)
    assert not torch.equal(first(x), first(x))
    assert not torch.equal(first(x), second(x))


def test_dropout_gradient_flows_only_through_kept_elements():
    torch.manual_seed(0)
    layer = identity_layer(0.5).train()
    x = torch.ones(32, 8, requires_grad=True)
    out = layer(x)
    out.sum().backward()
    assert_close(x.grad, out.detach())  # d(out)/dx is 2 where kept, 0 where dropped


def test_keep_mask_off_the_cpu_keeps_shape_dtype_and_device():
    like = torch.empty(3, 4, device="meta")  # stands in for CUDA/MPS: the non-CPU branch
    mask = keep_mask(like, 0.1)
    assert mask.shape == (3, 4) and mask.dtype == torch.uint8 and mask.device.type == "meta"
