"""LoraEmbedding: PEFT's layout and init, forward math, merge, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from senior_intern.config import LoraBias, LoraConfig, LoraInit
from senior_intern.lora import LoraEmbedding

IDS = torch.tensor([[0, 3, 9, 3], [1, 2, 0, 5]])


def make(padding_idx=None, **kw):
    torch.manual_seed(0)
    base = nn.Embedding(10, 6, padding_idx=padding_idx)
    kw.setdefault("rank", 3)
    kw.setdefault("alpha", 6.0)
    return base, LoraEmbedding(base, LoraConfig(**kw), name="embed")


def set_ab(layer, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        layer.lora_embedding_A.copy_(torch.randn(3, 10, generator=g))
        layer.lora_embedding_B.copy_(torch.randn(6, 3, generator=g))
    return layer.lora_embedding_A.detach().clone(), layer.lora_embedding_B.detach().clone()


def test_init_follows_peft_and_output_starts_at_base():
    base, layer = make()
    assert layer.lora_embedding_A.shape == (3, 10) and layer.lora_embedding_B.shape == (6, 3)
    assert torch.count_nonzero(layer.lora_embedding_A) == 0
    assert torch.count_nonzero(layer.lora_embedding_B) > 0
    assert_close(layer(IDS), base(IDS))
    _, zeros = make(init_method=LoraInit.ZEROS)
    assert torch.count_nonzero(zeros.lora_embedding_B) == 0


def test_forward_math_and_merge():
    base, layer = make()
    a, b = set_ab(layer)
    e0 = base.weight.detach().clone()
    expected = e0[IDS] + 2.0 * a.T[IDS] @ b.T
    assert_close(layer(IDS), expected)
    layer.merge()
    assert_close(base.weight, e0 + 2.0 * (b @ a).T)
    assert_close(layer(IDS), expected)
    layer.unmerge()
    assert_close(base.weight, e0)


def test_padding_index_gets_no_gradient():
    _, layer = make(padding_idx=0)
    set_ab(layer)
    layer(IDS).sum().backward()
    assert torch.count_nonzero(layer.lora_embedding_A.grad[:, 0]) == 0
    assert torch.count_nonzero(layer.lora_embedding_A.grad[:, 3]) > 0
    assert layer.base_layer.weight.grad is None


def test_weights_round_trip_and_shape_error():
    _, src = make()
    set_ab(src)
    _, dst = make()
    dst.load_weights(src.get_weights())
    assert_close(dst.lora_embedding_A, src.lora_embedding_A)
    bad = src.get_weights()
    bad.tensors["lora_embedding_B"] = torch.zeros(7, 3)
    with pytest.raises(ValueError, match=r"lora_embedding_B has shape \[7, 3\], expected \[6, 3\]"):
        dst.load_weights(bad)


def test_errors():
    with pytest.raises(ValueError, match="rank 7 is too large for layer embed"):
        LoraEmbedding(nn.Embedding(10, 6), LoraConfig(rank=7), name="embed")
    with pytest.raises(ValueError, match="LoRA bias"):
        LoraEmbedding(nn.Embedding(10, 6), LoraConfig(rank=2, bias=LoraBias.LORA_ONLY))
    with pytest.raises(TypeError, match="nn.Embedding"):
        LoraEmbedding(nn.Linear(4, 4), LoraConfig(rank=2))
    assert LoraEmbedding.from_base(nn.Embedding(10, 6), LoraConfig(rank=2)).trainable_parameter_count == 2 * 16
