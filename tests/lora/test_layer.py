"""LoraLayer math on tiny tensors: forward, merge, NaN safety, weights in/out, biases, inits."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from senior_intern.config import LoraBias, LoraConfig, LoraInit
from senior_intern.lora import LoraLayer, LoraWeights


def make_layer(in_f=12, out_f=10, bias=True, seed=0, **cfg):
    torch.manual_seed(seed)
    base = nn.Linear(in_f, out_f, bias=bias)
    cfg.setdefault("rank", 4)
    cfg.setdefault("alpha", 8.0)
    cfg.setdefault("dropout", 0.0)
    return base, LoraLayer(base, LoraConfig(**cfg), name="blk.proj")


def set_ab(layer, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        layer.lora_A.weight.copy_(torch.randn(layer.lora_A.weight.shape, generator=g))
        layer.lora_B.weight.copy_(torch.randn(layer.lora_B.weight.shape, generator=g))
    return layer.lora_A.weight.detach().clone(), layer.lora_B.weight.detach().clone()


def test_output_equals_base_at_init():
    base, layer = make_layer()
    w0, b0 = base.weight.detach().clone(), base.bias.detach().clone()
    x = torch.randn(3, 5, 12)
    assert_close(layer(x), x @ w0.T + b0)
    assert torch.count_nonzero(layer.lora_A.weight) > 0  # A is random, B is zero
    assert torch.count_nonzero(layer.lora_B.weight) == 0


def test_forward_is_base_plus_scaled_low_rank_update():
    base, layer = make_layer()
    a, b = set_ab(layer)
    x = torch.randn(2, 7, 12)
    expected = x @ base.weight.T + base.bias + (8.0 / 4) * (x @ a.T @ b.T)
    assert_close(layer(x), expected)
    assert_close(layer(x[0, 0]), expected[0, 0])  # a single vector works too


@pytest.mark.parametrize("lora_bias", [False, True])
def test_no_grad_forward_on_many_rows_is_the_same_update_and_leaves_the_layer_unmerged(lora_bias):
    torch.manual_seed(0)
    base = nn.Linear(16, 12, bias=not lora_bias)
    mode = LoraBias.LORA_ONLY if lora_bias else LoraBias.NONE
    layer = LoraLayer(base, LoraConfig(rank=4, alpha=8.0, dropout=0.0, bias=mode), name="blk.proj")
    a, b = set_ab(layer)
    if lora_bias:
        with torch.no_grad():
            layer.lora_B.bias.normal_()
    layer.eval()
    w0 = base.weight.detach().clone()
    b0 = base.bias.detach().clone() if base.bias is not None else 0.0
    b_lora = layer.lora_B.bias.detach().clone() if lora_bias else 0.0
    for rows in (1, 40):  # one row: the factored update; 40 rows: W + s B A formed for the call
        x = torch.randn(rows, 16, dtype=torch.float64).float()
        expected = x @ w0.T + b0 + 2.0 * (x @ a.T @ b.T + b_lora)
        with torch.no_grad():
            assert_close(layer(x), expected, rtol=1e-5, atol=1e-5)
        assert_close(layer(x), expected, rtol=1e-5, atol=1e-5)  # with grad: the autograd path
    assert not layer.merged and torch.equal(base.weight, w0)
    layer.disable()
    with torch.no_grad():
        assert_close(layer(x), x @ w0.T + (base.bias if base.bias is not None else 0.0))


def test_merge_matches_unmerged_and_unmerge_restores_the_base():
    base, layer = make_layer()
    a, b = set_ab(layer)
    w0 = base.weight.detach().clone()
    x = torch.randn(4, 12)
    unmerged = layer(x)
    layer.merge()
    assert layer.merged
    assert_close(base.weight, w0 + 2.0 * b @ a)
    assert_close(layer(x), unmerged)
    layer.merge()  # merging twice is a no-op
    assert_close(base.weight, w0 + 2.0 * b @ a)
    layer.unmerge()
    assert not layer.merged
    assert_close(base.weight, w0)
    layer.unmerge()  # unmerge when not merged is a no-op
    assert_close(base.weight, w0)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_merge_refuses_non_finite_weights_and_leaves_the_base_untouched(bad):
    base, layer = make_layer()
    set_ab(layer)
    with torch.no_grad():
        layer.lora_B.weight[0, 0] = bad
    w0 = base.weight.detach().clone()
    with pytest.raises(ValueError, match="blk.proj.*NaN or Inf"):
        layer.merge()
    assert not layer.merged
    assert torch.equal(base.weight, w0)


def test_merge_checks_the_result_in_the_base_dtype():
    base = nn.Linear(6, 5).half()
    layer = LoraLayer(base, LoraConfig(rank=4, alpha=8.0, dropout=0.0), name="blk.half")
    with torch.no_grad():
        layer.lora_A.weight.fill_(100.0)  # scaling * B A = 2 * 4 * 100 * 100 = 8e4: finite in float32,
        layer.lora_B.weight.fill_(100.0)  # but past float16's largest value (65504)
    w0 = base.weight.detach().clone()
    with pytest.raises(ValueError, match=r"blk\.half.*NaN or Inf in float16"):
        layer.merge()
    assert not layer.merged
    assert torch.equal(base.weight, w0)


def test_merge_refuses_a_non_finite_lora_bias():
    layer = LoraLayer(nn.Linear(6, 5), LoraConfig(rank=2, bias=LoraBias.LORA_ONLY, dropout=0.0))
    with torch.no_grad():
        layer.lora_B.bias[1] = float("nan")
    w0 = layer.base_layer.weight.detach().clone()
    with pytest.raises(ValueError, match="NaN or Inf"):
        layer.merge()
    assert torch.equal(layer.base_layer.weight, w0)


def test_disable_gives_base_only_and_enable_restores():
    base, layer = make_layer()
    set_ab(layer)
    x = torch.randn(3, 12)
    with_lora = layer(x)
    layer.disable()
    assert_close(layer(x), base(x))
    layer.enable()
    assert_close(layer(x), with_lora)


def test_disable_unmerges_a_merged_layer():
    base, layer = make_layer()
    set_ab(layer)
    w0 = base.weight.detach().clone()
    layer.merge()
    layer.disable()
    assert not layer.merged
    assert_close(base.weight, w0)


def test_get_and_load_weights_round_trip():
    _, src = make_layer(seed=0)
    set_ab(src, seed=5)
    _, dst = make_layer(seed=3)
    weights = src.get_weights()
    assert isinstance(weights, LoraWeights)
    assert weights.name == "blk.proj" and weights.rank == 4 and weights.alpha == 8.0
    assert (weights.in_features, weights.out_features) == (12, 10)
    assert set(weights.tensors) == {"lora_A.weight", "lora_B.weight"}
    assert weights.tensors["lora_A.weight"].data_ptr() != src.lora_A.weight.data_ptr()  # a copy
    dst.load_weights(weights)
    assert_close(dst.lora_A.weight, src.lora_A.weight)
    assert_close(dst.lora_B.weight, src.lora_B.weight)


def test_load_weights_rejects_wrong_rank_and_shapes():
    _, layer = make_layer()
    w = layer.get_weights()
    bad_rank = LoraWeights(w.name, 8, w.alpha, 12, 10, {"lora_A.weight": torch.zeros(8, 12), "lora_B.weight": torch.zeros(10, 8)})
    with pytest.raises(ValueError, match="rank 8.*rank 4"):
        layer.load_weights(bad_rank)
    bad_shape = LoraWeights(w.name, 4, w.alpha, 12, 10, {"lora_A.weight": torch.zeros(4, 13), "lora_B.weight": torch.zeros(10, 4)})
    with pytest.raises(ValueError, match=r"lora_A.weight has shape \[4, 13\], expected \[4, 12\]"):
        layer.load_weights(bad_shape)
    missing = LoraWeights(w.name, 4, w.alpha, 12, 10, {"lora_A.weight": torch.zeros(4, 12)})
    with pytest.raises(ValueError, match="lora_B.weight is missing"):
        layer.load_weights(missing)
    extra = LoraWeights(w.name, 4, w.alpha, 12, 10, {**w.tensors, "lora_B.bias": torch.zeros(10)})
    with pytest.raises(ValueError, match="unexpected tensor lora_B.bias"):
        layer.load_weights(extra)


def test_load_weights_into_a_merged_layer_remerges():
    base, layer = make_layer()
    set_ab(layer, seed=1)
    _, other = make_layer()
    a, b = set_ab(other, seed=2)
    w0 = base.weight.detach().clone()
    layer.merge()
    layer.load_weights(other.get_weights())
    assert layer.merged
    assert_close(base.weight, w0 + 2.0 * b @ a)


@pytest.mark.parametrize(
    ("mode", "lora_bias", "base_bias_trains"),
    [(LoraBias.NONE, False, False), (LoraBias.LORA_ONLY, True, False), (LoraBias.ALL, True, True)],
)
def test_bias_modes_decide_what_trains(mode, lora_bias, base_bias_trains):
    torch.manual_seed(0)
    base = nn.Linear(12, 10)
    layer = LoraLayer(base, LoraConfig(rank=4, alpha=8.0, dropout=0.0, bias=mode))
    trainable = {n for n, p in layer.named_parameters() if p.requires_grad}
    expected = {"lora_A.weight", "lora_B.weight"}
    expected |= {"lora_B.bias"} if lora_bias else set()
    expected |= {"base_layer.bias"} if base_bias_trains else set()
    assert trainable == expected
    assert not base.weight.requires_grad
    assert layer.trainable_parameter_count == sum(layer.get_parameter(n).numel() for n in expected)


def test_lora_bias_is_scaled_and_merges_into_a_base_without_bias():
    torch.manual_seed(0)
    base = nn.Linear(6, 5, bias=False)
    layer = LoraLayer(base, LoraConfig(rank=2, alpha=6.0, dropout=0.0, bias=LoraBias.LORA_ONLY))
    a, b = set_ab(layer)
    with torch.no_grad():
        layer.lora_B.bias.copy_(torch.arange(5.0))
    x = torch.randn(3, 6)
    expected = x @ base.weight.T + 3.0 * (x @ a.T @ b.T + torch.arange(5.0))
    assert_close(layer(x), expected)
    layer.merge()
    assert base.bias is not None and not base.bias.requires_grad
    assert_close(layer(x), expected)
    layer.unmerge()
    assert base.bias is None
    assert_close(layer(x), expected)


def test_lora_bias_merges_into_an_existing_base_bias_and_unmerges():
    torch.manual_seed(0)
    base = nn.Linear(6, 5)
    b0 = base.bias.detach().clone()
    layer = LoraLayer(base, LoraConfig(rank=2, alpha=4.0, dropout=0.0, bias=LoraBias.LORA_ONLY))
    set_ab(layer)
    with torch.no_grad():
        layer.lora_B.bias.fill_(0.5)
    layer.merge()
    assert_close(base.bias, b0 + 2.0 * 0.5)
    layer.unmerge()
    assert_close(base.bias, b0)


def test_lora_bias_with_float32_factors_on_a_bfloat16_base():
    torch.manual_seed(0)
    base = nn.Linear(6, 5).to(torch.bfloat16)
    layer = LoraLayer(base, LoraConfig(rank=2, alpha=2.0, dropout=0.0, bias=LoraBias.LORA_ONLY), dtype=torch.float32)
    with torch.no_grad():
        layer.lora_B.bias.fill_(1.0)
    x = torch.randn(3, 6, dtype=torch.bfloat16)
    assert_close(layer(x), base(x) + 1.0)


def test_rank_larger_than_the_layer_is_an_error_naming_it():
    with pytest.raises(ValueError, match=r"rank 9 is too large for layer blk.proj \(12 -> 8\).*min\(in, out\) = 8"):
        LoraLayer(nn.Linear(12, 8), LoraConfig(rank=9), name="blk.proj")


def test_rank_below_one_is_an_error():
    with pytest.raises(ValueError, match="at least 1"):
        LoraLayer(nn.Linear(4, 4), LoraConfig(rank=0), name="x")


def test_bad_dropout_and_wrong_module_type_are_refused():
    with pytest.raises(ValueError, match="dropout"):
        LoraLayer(nn.Linear(4, 4), LoraConfig(rank=2, dropout=1.0))
    with pytest.raises(TypeError, match="nn.Linear"):
        LoraLayer(nn.Conv1d(4, 4, 1), LoraConfig(rank=2))


def test_kaiming_init_bound_and_scale():
    torch.manual_seed(0)
    base = nn.Linear(400, 300)
    layer = LoraLayer(base, LoraConfig(rank=64, init_method=LoraInit.KAIMING_UNIFORM))
    a = layer.lora_A.weight.detach()
    bound = 1.0 / math.sqrt(400)
    assert a.abs().max() <= bound
    assert a.abs().max() > 0.99 * bound
    assert a.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.03)
    scaled = LoraLayer(nn.Linear(400, 300), LoraConfig(rank=64, init_scale=0.5))
    assert scaled.lora_A.weight.abs().max() <= 0.5 * bound
    assert scaled.lora_A.weight.abs().max() > 0.49 * bound


def test_gaussian_init_std_is_one_over_rank():
    torch.manual_seed(0)
    layer = LoraLayer(nn.Linear(500, 300), LoraConfig(rank=32, init_method=LoraInit.GAUSSIAN, init_scale=2.0))
    a = layer.lora_A.weight.detach()
    assert a.mean().item() == pytest.approx(0.0, abs=0.01)
    assert a.std().item() == pytest.approx(2.0 / 32, rel=0.03)
    assert torch.count_nonzero(layer.lora_B.weight) == 0


def test_zeros_init_and_reset():
    layer = LoraLayer(nn.Linear(8, 8), LoraConfig(rank=2, init_method=LoraInit.ZEROS))
    assert torch.count_nonzero(layer.lora_A.weight) == 0 and torch.count_nonzero(layer.lora_B.weight) == 0
    _, kaiming = make_layer()
    set_ab(kaiming)
    kaiming.merge()
    kaiming.reset()
    assert not kaiming.merged
    assert torch.count_nonzero(kaiming.lora_B.weight) == 0
    assert torch.count_nonzero(kaiming.lora_A.weight) > 0


def test_only_lora_parameters_get_gradients():
    base, layer = make_layer()
    set_ab(layer)
    layer.train()
    x = torch.randn(5, 12, requires_grad=True)
    layer(x).square().sum().backward()
    assert layer.lora_A.weight.grad is not None and layer.lora_B.weight.grad is not None
    assert base.weight.grad is None and base.bias.grad is None
    assert x.grad is not None


def test_bfloat16_layer_keeps_dtype_and_matches_float32():
    base, layer = make_layer(seed=0)
    set_ab(layer)
    x = torch.randn(4, 12)
    ref = layer(x)
    layer.to(torch.bfloat16)
    out = layer(x.to(torch.bfloat16))
    assert out.dtype == torch.bfloat16
    assert_close(out.float(), ref, atol=0.15, rtol=0.05)


def test_bfloat16_merge_matches_the_unmerged_forward():
    base, layer = make_layer(seed=0)
    set_ab(layer)
    layer.to(torch.bfloat16)
    w0 = base.weight.detach().clone()
    x = torch.randn(4, 12, dtype=torch.bfloat16)
    unmerged = layer(x)
    layer.merge()
    assert base.weight.dtype == torch.bfloat16
    assert_close(layer(x), unmerged, atol=0.1, rtol=0.02)
    layer.unmerge()
    assert_close(base.weight, w0, atol=0.05, rtol=0.02)


def test_lora_factors_in_float32_on_a_bfloat16_base():
    torch.manual_seed(0)
    base = nn.Linear(12, 10).to(torch.bfloat16)
    layer = LoraLayer(base, LoraConfig(rank=4, dropout=0.0), dtype=torch.float32)
    assert layer.lora_A.weight.dtype == torch.float32
    set_ab(layer)
    out = layer(torch.randn(3, 12, dtype=torch.bfloat16))
    assert out.dtype == torch.bfloat16


def test_from_base_and_module_attributes():
    base = nn.Linear(6, 4)
    layer = LoraLayer.from_base(base, LoraConfig(rank=2), name="x")
    assert layer.weight is base.weight and layer.bias is base.bias
    assert (layer.in_features, layer.out_features, layer.rank, layer.scaling) == (6, 4, 2, 16.0)
    assert "rank=2" in repr(layer)
