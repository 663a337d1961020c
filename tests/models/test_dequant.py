"""The torch GGUF dequantisation kernels against the gguf package's reference, and ``FrozenLinear``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType
from gguf import quants as gguf_quants
from torch import nn

from senior_intern.models import dequant
from senior_intern.models.quantized import FrozenLinear, compact_bytes, quantize_linears

ROWS, COLS = 8, 512


def _blocks(type_name: str, rng: np.random.Generator) -> np.ndarray:
    """uint8 rows of ``type_name``: quantised by gguf where it can, else random bytes with sane f16 scales."""
    qtype = GGMLQuantizationType[type_name]
    x = rng.standard_normal((ROWS, COLS)).astype(np.float32)
    try:
        q = gguf_quants.quantize(x, qtype)
    except NotImplementedError:  # gguf-py cannot quantise the K-quants; any bytes are valid blocks
        block_bytes, block_elements, _ = dequant.KERNELS[type_name]
        q = rng.integers(0, 256, (ROWS, COLS // block_elements * block_bytes), dtype=np.uint8)
        blocks = q.reshape(-1, block_bytes)
        scale_at = (208,) if type_name == "Q6_K" else (0, 2)
        for at in scale_at:
            blocks[:, at:at + 2] = rng.uniform(-0.1, 0.1, len(blocks)).astype(np.float16).view(np.uint8).reshape(-1, 2)
    return np.ascontiguousarray(q).view(np.uint8).reshape(ROWS, -1)


@pytest.mark.parametrize("type_name", dequant.SUPPORTED)
def test_kernel_is_bitwise_the_gguf_reference(type_name):
    q = _blocks(type_name, np.random.default_rng(0))
    expected = gguf_quants.dequantize(q, GGMLQuantizationType[type_name]).reshape(ROWS, COLS)
    got = dequant.dequantize(torch.from_numpy(q.copy()), type_name, COLS)
    assert got.dtype == torch.float32 and got.shape == (ROWS, COLS)
    assert np.array_equal(got.numpy(), expected)


def test_unsupported_type_is_named():
    with pytest.raises(dequant.UnsupportedQuantization, match="Q3_K cannot be kept compact .*Q4_K"):
        dequant.check_supported("Q3_K", "model.gguf: tensor blk.0.attn_q.weight")


@pytest.mark.parametrize("type_name", ["Q4_K", "Q8_0", "Q6_K"])
def test_frozen_linear_forward_and_input_gradient_equal_the_dense_layer(type_name):
    q = _blocks(type_name, np.random.default_rng(1))
    layer = FrozenLinear(COLS, ROWS, type_name, torch.from_numpy(q.copy()), bias=torch.randn(ROWS))
    dense = layer.to_dense()
    x = torch.randn(3, 5, COLS, requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    y, y2 = layer(x), dense(x2)
    torch.testing.assert_close(y, y2, rtol=0, atol=0)
    g = torch.randn_like(y)
    y.backward(g)
    y2.backward(g)
    torch.testing.assert_close(x.grad, x2.grad, rtol=1e-6, atol=1e-6)
    assert layer.nbytes < dense.weight.numel() * 4 / 3


def test_a_weight_applied_in_slices_equals_the_whole(monkeypatch):
    """Above SLICE_BYTES the products run a slice of rows at a time (3, 3, 2 of 8 rows here)."""
    from senior_intern.models import quantized

    q = _blocks("Q8_0", np.random.default_rng(3))
    layer = FrozenLinear(COLS, ROWS, "Q8_0", torch.from_numpy(q.copy()), bias=torch.randn(ROWS))
    dense = layer.to_dense()
    monkeypatch.setattr(quantized, "SLICE_BYTES", 3 * COLS * 4)
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(6, COLS, generator=gen).requires_grad_(True)
    y = layer(x)
    # A slice of rows runs through a different BLAS kernel than the whole weight, so the 512-term
    # float32 sums round differently: outputs of about 20 differ by up to ~1e-5 (measured 1.2e-5
    # once with an unseeded input), a few float32 ulps. A wrong slice would be off by whole units.
    torch.testing.assert_close(y, dense(x), rtol=1e-5, atol=1e-4)
    g = torch.randn(y.shape, generator=gen)
    (grad,) = torch.autograd.grad(y, x, g)
    torch.testing.assert_close(grad, g @ dense.weight, rtol=1e-5, atol=1e-5)
    acc = torch.ones(6, COLS)
    torch.testing.assert_close(layer.mm(g, out=acc, accumulate=True), 1 + g @ dense.weight, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(layer.rows_at(torch.tensor([7, 0, 7])), dense.weight[[7, 0, 7]].detach())


def test_backward_keeps_no_dequantised_weight():
    q = _blocks("Q4_0", np.random.default_rng(2))
    layer = FrozenLinear(COLS, ROWS, "Q4_0", torch.from_numpy(q.copy()))
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.shape) or t, lambda t: t):
        layer(torch.randn(4, COLS, requires_grad=True)).sum().backward()
    assert (ROWS, COLS) not in saved


@pytest.mark.parametrize(("kind", "tolerance", "ratio"), [("int8", 0.01, 0.27), ("int4", 0.2, 0.17)])
def test_integer_quantisation_is_close_and_smaller(kind, tolerance, ratio):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(256, 128), nn.SiLU(), nn.Linear(128, 64))
    x = torch.randn(16, 256)
    expected = model(x).detach()
    before = sum(p.numel() * 4 for p in model.parameters())
    assert quantize_linears(model, kind) == 2
    assert all(isinstance(m, FrozenLinear) and m.kind == kind for m in (model[0], model[2]))
    compact, other = compact_bytes(model)
    assert other == 0 and compact < ratio * before
    error = (model(x) - expected).norm() / expected.norm()
    assert error < tolerance
