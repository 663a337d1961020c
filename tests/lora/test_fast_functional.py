"""LoraLinearFunction: the plain LoRA computation's values and gradients, with less saved memory."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.testing import assert_close

from senior_intern.config import LoraConfig
from senior_intern.lora import LoraLayer
from senior_intern.lora.dropout import DropPlan
from senior_intern.lora.functional import LoraLinearFunction, LoraSpec


def plain(x, weight, bias, a, b, lora_bias, spec: LoraSpec):
    """The textbook computation with a dense keep mask built from the plan."""
    keep = torch.ones(x.numel())
    if spec.drop is not None:
        keep[spec.drop.positions] = 0
    y = F.linear(x, weight, bias) + spec.h_scale * F.linear(F.linear(x * keep.view(x.shape), a), b)
    return y if lora_bias is None else y + spec.b_scale * lora_bias


def tensors(with_bias: bool, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    n, d_in, d_out, r = 37, 24, 20, 4
    x = torch.randn(n, d_in, generator=g, dtype=dtype).requires_grad_()
    weight = torch.randn(d_out, d_in, generator=g, dtype=dtype) / d_in**0.5
    bias = (0.1 * torch.randn(d_out, generator=g, dtype=dtype)).requires_grad_() if with_bias else None
    a = (torch.randn(r, d_in, generator=g, dtype=dtype) / d_in**0.5).requires_grad_()
    b = (0.1 * torch.randn(d_out, r, generator=g, dtype=dtype)).requires_grad_()
    lora_bias = (0.1 * torch.randn(d_out, generator=g, dtype=dtype)).requires_grad_() if with_bias else None
    return x, weight, bias, a, b, lora_bias


@pytest.mark.parametrize("p", [0.0, 0.3])
@pytest.mark.parametrize("with_bias", [False, True])
def test_values_and_gradients_equal_the_plain_computation(p, with_bias):
    x, weight, bias, a, b, lora_bias = tensors(with_bias)
    drop = DropPlan.draw(x.shape, p, "cpu", torch.Generator().manual_seed(1)) if p else None
    spec = LoraSpec(2.0 / (1 - p), 2.0, drop)
    inputs = [t for t in (x, bias, a, b, lora_bias) if t is not None]
    upstream = torch.randn(37, 20, generator=torch.Generator().manual_seed(2))

    fast = LoraLinearFunction.apply(x, weight, bias, a, b, lora_bias, spec)
    fast_grads = torch.autograd.grad(fast, inputs, upstream)
    ref = plain(x, weight, bias, a, b, lora_bias, spec)
    ref_grads = torch.autograd.grad(ref, inputs, upstream)
    assert_close(fast, ref, atol=1e-5, rtol=1e-5)
    for got, want in zip(fast_grads, ref_grads):
        assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_gradcheck_in_float64():
    x, weight, bias, a, b, lora_bias = tensors(True, torch.float64)
    spec = LoraSpec(1.7, 0.5, DropPlan.draw(x.shape, 0.2, "cpu", torch.Generator().manual_seed(3)))
    assert torch.autograd.gradcheck(lambda *t: LoraLinearFunction.apply(t[0], weight, t[1], t[2], t[3], t[4], spec),
                                     (x, bias, a, b, lora_bias))


def test_only_requested_gradients_are_computed():
    x, weight, _, a, b, _ = tensors(False)
    x.requires_grad_(False)
    spec = LoraSpec(1.0, 1.0, DropPlan.draw(x.shape, 0.5, "cpu"))
    y = LoraLinearFunction.apply(x, weight, None, a, b, None, spec)
    y.sum().backward()
    assert x.grad is None and a.grad is not None and b.grad is not None


def saved_storages(fn) -> list[torch.Tensor]:
    """Tensors autograd keeps for backward while ``fn`` runs (one per distinct storage)."""
    saved: dict[int, torch.Tensor] = {}

    def pack(t):
        saved.setdefault(t.untyped_storage().data_ptr(), t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return list(saved.values()), out


def test_layers_sharing_an_input_keep_it_once_and_no_dropped_copies():
    torch.manual_seed(0)
    cfg = LoraConfig(rank=4, dropout=0.1)
    q, k, v = (LoraLayer(nn.Linear(64, d, bias=False), cfg).train() for d in (64, 32, 32))
    x = torch.randn(4, 32, 64, requires_grad=True) * 1.0  # a non-leaf input, like a norm's output
    saved, outs = saved_storages(lambda: [q(x), k(x), v(x)])
    activations = [t for t in saved if t.numel() >= x.numel()]
    assert len(activations) == 1 and activations[0].untyped_storage().data_ptr() == x.untyped_storage().data_ptr()
    sum(o.sum() for o in outs).backward()


def test_layer_uses_the_function_only_where_it_computes_the_same():
    layer = LoraLayer(nn.Linear(8, 8), LoraConfig(rank=2))
    assert layer.fused_ok(torch.randn(2, 8))
    assert not layer.fused_ok(torch.randn(2, 8, dtype=torch.float64))
    hooked = LoraLayer(nn.Linear(8, 8), LoraConfig(rank=2))
    hooked.base_layer.register_forward_hook(lambda *_: None)
    assert not hooked.fused_ok(torch.randn(2, 8))  # hooks on the base must still run


@pytest.mark.parametrize("p", [0.0, 0.3])
@pytest.mark.parametrize("slice_rows", [None, 3])
def test_a_compact_base_applied_in_slices_gives_the_dense_values_and_gradients(p, slice_rows, monkeypatch):
    """A FrozenLinear base (int8 here) in whole and in 3-row slices (20 rows: 3, ..., 3, 2) equals
    its dequantised weight used densely, including the input gradient accumulated over slices."""
    from senior_intern.models import quantized

    x, weight, bias, a, b, lora_bias = tensors(True)
    compact = quantized.FrozenLinear.quantize(nn.Linear(24, 20, bias=False), "int8")
    compact.qdata.copy_(torch.randint(-127, 128, compact.qdata.shape, generator=torch.Generator().manual_seed(4)))
    if slice_rows:
        monkeypatch.setattr(quantized, "SLICE_BYTES", slice_rows * 24 * 4)
    drop = DropPlan.draw(x.shape, p, "cpu", torch.Generator().manual_seed(1)) if p else None
    spec = LoraSpec(2.0 / (1 - p), 2.0, drop)
    inputs = [x, bias, a, b, lora_bias]
    upstream = torch.randn(37, 20, generator=torch.Generator().manual_seed(2))
    fast = LoraLinearFunction.apply(x, compact, bias, a, b, lora_bias, spec)
    fast_grads = torch.autograd.grad(fast, inputs, upstream)
    ref = plain(x, compact.dequantized(), bias, a, b, lora_bias, spec)
    ref_grads = torch.autograd.grad(ref, inputs, upstream)
    assert_close(fast, ref, atol=1e-5, rtol=1e-5)
    for got, want in zip(fast_grads, ref_grads):
        assert_close(got, want, atol=1e-5, rtol=1e-5)
