"""LoraModel on a small non-Llama module: matching, counts, modes, state dicts, merge, unwrap."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from senior_intern.config import LoraBias, LoraConfig
from senior_intern.lora import LoraEmbedding, LoraLayer, LoraModel
from senior_intern.models.info import format_parameter_count as format_count


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.Linear(8, 8)
        self.mlp = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 8))
        self.norm = nn.LayerNorm(8)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = h + self.attn(self.norm(h))
        return h + self.mlp(h)


class Toy(nn.Module):
    """ids [B, T] -> logits [B, T, 20]; embed 20x8, two blocks, an LM head."""

    def __init__(self, seed: int = 0, tied: bool = False) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.embed = nn.Embedding(20, 8)
        self.blocks = nn.ModuleList([Block(), Block()])
        self.lm_head = nn.Linear(8, 20, bias=False)
        if tied:
            self.lm_head.weight = self.embed.weight
        self.eval()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.embed(ids)
        for block in self.blocks:
            h = block(h)
        return self.lm_head(h)


ALL_LINEAR_NAMES = [f"blocks.{i}.{m}" for i in range(2) for m in ("attn", "mlp.0", "mlp.3")]
IDS = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8]])


def cfg(**kw) -> LoraConfig:
    kw.setdefault("rank", 2)
    kw.setdefault("alpha", 4.0)
    kw.setdefault("dropout", 0.0)
    kw.setdefault("target_modules", ["all-linear"])
    return LoraConfig(**kw)


def randomize(lora: LoraModel, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in lora.lora_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)


def test_all_linear_wraps_every_linear_but_the_lm_head():
    lora = LoraModel(Toy(), cfg())
    assert lora.matched_modules == ALL_LINEAR_NAMES
    assert list(lora.lora_layers()) == ALL_LINEAR_NAMES
    assert all(isinstance(m, LoraLayer) for m in lora.lora_layers().values())
    assert isinstance(lora.model.lm_head, nn.Linear) and not isinstance(lora.model.lm_head, LoraLayer)
    assert lora.warnings == []
    assert lora.target_module_names() == ["0", "3", "attn"]


def test_parameter_counts_are_exact():
    toy = Toy()
    base_total = sum(p.numel() for p in toy.parameters())
    lora = LoraModel(toy, cfg(rank=2))
    per_layer = {"attn": 2 * (8 + 8), "mlp.0": 2 * (8 + 16), "mlp.3": 2 * (16 + 8)}
    trainable = 2 * sum(per_layer.values())
    assert lora.trainable_parameter_count == trainable
    assert lora.frozen_parameter_count == base_total
    assert lora.total_parameter_count == base_total + trainable
    assert sum(p.numel() for p in lora.lora_parameters()) == trainable
    share = 100 * trainable / (base_total + trainable)
    assert lora.parameter_summary() == f"trainable {trainable} / total 1.3K ({share:.2f}%)"
    assert base_total + trainable == 1312


def test_format_count():
    assert [format_count(n) for n in (999, 4_900, 139_420_000, 1_240_000_000)] == ["999", "4.9K", "139.4M", "1.24B"]


@pytest.mark.parametrize(
    ("targets", "expected"),
    [
        (["attn"], ["blocks.0.attn", "blocks.1.attn"]),
        (["mlp.0"], ["blocks.0.mlp.0", "blocks.1.mlp.0"]),
        (["blocks.1.attn"], ["blocks.1.attn"]),
        (["lm_head"], ["lm_head"]),
        (["attn", "embed"], ["embed", "blocks.0.attn", "blocks.1.attn"]),
    ],
)
def test_targets_match_whole_dotted_suffixes(targets, expected):
    lora = LoraModel(Toy(), cfg(target_modules=targets))
    assert lora.matched_modules == expected


def test_warning_when_nothing_matched_lists_the_linear_names():
    lora = LoraModel(Toy(), cfg(target_modules=["q_proj", "ttn"]))
    assert lora.matched_modules == []
    assert len(lora.warnings) == 1
    assert "no module matched target_modules ['q_proj', 'ttn']" in lora.warnings[0]
    assert "available linear layer names: 0, 3, attn, lm_head" in lora.warnings[0]


def test_warnings_for_unused_targets_and_non_linear_matches():
    lora = LoraModel(Toy(), cfg(target_modules=["attn", "nope", "norm"]))
    assert lora.matched_modules == ["blocks.0.attn", "blocks.1.attn"]
    # issue 13: an unknown target lists the module names the model has
    assert "target 'nope' matched no module; the model's linear layer names: 0, 3, attn, lm_head" in lora.warnings
    assert any("blocks.0.norm (LayerNorm)" in w for w in lora.warnings)


def test_apply_to_embeddings_and_lm_head():
    lora = LoraModel(Toy(), cfg(target_modules=["attn"], apply_to_embeddings=True, apply_to_lm_head=True))
    assert lora.matched_modules == ["embed", "blocks.0.attn", "blocks.1.attn", "lm_head"]
    assert isinstance(lora.model.embed, LoraEmbedding)
    keys = set(lora.lora_state_dict())
    assert "base_model.model.embed.lora_embedding_A" in keys
    assert "base_model.model.lm_head.lora_B.weight" in keys


def test_warnings_when_embeddings_or_head_are_asked_for_but_absent():
    class Headless(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = nn.Linear(4, 4)

        def get_output_embeddings(self):
            raise NotImplementedError

    lora = LoraModel(Headless(), cfg(apply_to_embeddings=True, apply_to_lm_head=True))
    assert lora.matched_modules == ["proj"]
    assert any("apply_to_lm_head" in w for w in lora.warnings)
    assert any("apply_to_embeddings" in w for w in lora.warnings)


def test_train_leaves_the_base_in_eval_mode_but_lora_in_train_mode():
    lora = LoraModel(Toy(), cfg(dropout=0.1))
    lora.train()
    assert lora.training
    for name, module in lora.model.named_modules():
        if isinstance(module, LoraLayer):
            assert module.training and not module.base_layer.training, name
        elif not name.endswith(("lora_A", "lora_B", "base_layer")):
            assert not module.training, name
    no_lora_dropout = LoraModel(Toy(), cfg(dropout=0.0)).train()
    randomize(no_lora_dropout)
    assert torch.equal(no_lora_dropout(IDS), no_lora_dropout(IDS))  # base dropout (p=0.5) stays off
    lora.eval()
    assert not any(m.training for m in lora.modules())


def test_train_sets_the_flag_of_gradient_checkpointing_modules_only():
    toy = Toy()
    toy.blocks[0].gradient_checkpointing = True
    lora = LoraModel(toy, cfg()).train()
    assert toy.blocks[0].training and not toy.blocks[1].training
    assert not toy.blocks[0].mlp.training
    lora.eval()
    assert not toy.blocks[0].training


def test_only_lora_parameters_get_gradients():
    lora = LoraModel(Toy(), cfg())
    randomize(lora)
    lora.train()
    lora(IDS).logsumexp(-1).sum().backward()
    trainable = {id(p) for p in lora.lora_parameters()}
    for name, p in lora.model.named_parameters():
        if id(p) in trainable:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None and not p.requires_grad, name


def test_bfloat16_forward():
    toy = Toy()
    ref = LoraModel(Toy(), cfg())
    randomize(ref)
    lora = LoraModel(toy.to(torch.bfloat16), cfg())
    lora.load_lora_state_dict({k: v.to(torch.bfloat16) for k, v in ref.lora_state_dict().items()})
    assert all(p.dtype == torch.bfloat16 for p in lora.lora_parameters())
    out = lora(IDS)
    assert out.dtype == torch.bfloat16
    assert_close(out.float(), ref(IDS), atol=0.1, rtol=0.05)


@pytest.mark.parametrize(
    ("mode", "extra_keys"),
    [
        (LoraBias.NONE, set()),
        (LoraBias.LORA_ONLY, {f"{n}.lora_B.bias" for n in ALL_LINEAR_NAMES}),
        (
            LoraBias.ALL,
            {f"{n}.lora_B.bias" for n in ALL_LINEAR_NAMES}
            | {f"{n}.base_layer.bias" for n in ALL_LINEAR_NAMES}
            | {f"blocks.{i}.norm.bias" for i in range(2)},
        ),
    ],
)
def test_state_dict_keys_follow_peft_for_each_bias_mode(mode, extra_keys):
    lora = LoraModel(Toy(), cfg(bias=mode))
    factors = {f"{n}.lora_{ab}.weight" for n in ALL_LINEAR_NAMES for ab in "AB"}
    expected = {"base_model.model." + k for k in factors | extra_keys}
    assert set(lora.lora_state_dict()) == expected
    trainable = {n for n, p in lora.model.named_parameters() if p.requires_grad}
    assert {"base_model.model." + n for n in trainable} == expected


def test_bias_with_embeddings_is_refused():
    with pytest.raises(ValueError, match="apply_to_embeddings"):
        LoraModel(Toy(), cfg(bias=LoraBias.LORA_ONLY, apply_to_embeddings=True))


def test_a_rank_too_large_for_one_layer_leaves_the_model_untouched():
    toy = Toy()
    with pytest.raises(ValueError, match=r"rank 9 is too large for layer blocks.0.attn \(8 -> 8\)"):
        LoraModel(toy, cfg(rank=9))
    assert not any(isinstance(m, LoraLayer) for m in toy.modules())
    assert all(p.requires_grad for p in toy.parameters())


def test_wrapping_twice_is_refused():
    lora = LoraModel(Toy(), cfg())
    with pytest.raises(ValueError, match="already contains LoRA layers"):
        LoraModel(lora.model, cfg())


def test_state_dict_round_trip_and_strict_errors():
    src = LoraModel(Toy(), cfg())
    randomize(src)
    dst = LoraModel(Toy(), cfg())
    result = dst.load_lora_state_dict(src.lora_state_dict())
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert_close(dst(IDS), src(IDS))

    sd = src.lora_state_dict()
    first = next(iter(sd))
    with pytest.raises(ValueError, match=f"Missing LoRA key {first}"):
        dst.load_lora_state_dict({k: v for k, v in sd.items() if k != first})
    with pytest.raises(ValueError, match="Unexpected LoRA key base_model.model.foo.lora_A.weight"):
        dst.load_lora_state_dict({**sd, "base_model.model.foo.lora_A.weight": torch.zeros(1)})
    bad = dict(sd, **{first: torch.zeros(3, 8)})
    with pytest.raises(ValueError, match=rf"Shape mismatch for {first}: the state dict has \[3, 8\], the model expects \[2, 8\]"):
        dst.load_lora_state_dict(bad)
    loose = dst.load_lora_state_dict({first: sd[first], "extra": torch.zeros(1)}, strict=False)
    assert loose.unexpected_keys == ["extra"] and first not in loose.missing_keys


def test_merge_unmerge_and_load_while_merged():
    lora = LoraModel(Toy(), cfg())
    randomize(lora)
    out = lora(IDS)
    lora.merge()
    assert all(layer.merged for layer in lora.lora_layers().values())
    assert_close(lora(IDS), out)
    other = LoraModel(Toy(), cfg())
    randomize(other, seed=9)
    lora.load_lora_state_dict(other.lora_state_dict())
    assert all(layer.merged for layer in lora.lora_layers().values())
    assert_close(lora(IDS), other(IDS))
    lora.unmerge()
    assert_close(lora(IDS), other(IDS))


def test_merge_of_a_broken_layer_merges_nothing():
    lora = LoraModel(Toy(), cfg())
    randomize(lora)
    weights = {n: m.weight.detach().clone() for n, m in lora.lora_layers().items()}
    with torch.no_grad():
        lora.lora_layers()["blocks.1.mlp.3"].lora_B.weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="blocks.1.mlp.3"):
        lora.merge()
    for name, layer in lora.lora_layers().items():
        assert not layer.merged
        assert torch.equal(layer.weight, weights[name]), name


def test_merge_that_overflows_rolls_back_the_layers_already_merged():
    lora = LoraModel(Toy(), cfg())
    layers = lora.lora_layers()
    with torch.no_grad():
        for layer in list(layers.values())[:2]:
            layer.lora_A.weight.fill_(0.1)
            layer.lora_B.weight.fill_(0.1)
        huge = layers["blocks.0.mlp.0"]
        huge.lora_A.weight.fill_(1e30)  # finite factors whose product overflows float32
        huge.lora_B.weight.fill_(1e30)
    weights = {n: m.weight.detach().clone() for n, m in layers.items()}
    with pytest.raises(ValueError, match="blocks.0.mlp.0.*NaN or Inf"):
        lora.merge()
    for name, layer in layers.items():
        assert not layer.merged
        assert_close(layer.weight, weights[name])


def test_disable_enable_reset():
    toy = Toy()
    base_out = toy(IDS)
    lora = LoraModel(toy, cfg())
    randomize(lora)
    adapted = lora(IDS)
    assert not torch.allclose(adapted, base_out)
    lora.disable()
    assert_close(lora(IDS), base_out)
    lora.enable()
    assert_close(lora(IDS), adapted)
    lora.reset()
    assert_close(lora(IDS), base_out)


def test_unwrap_restores_modules_merged_or_not():
    toy = Toy()
    base_out = toy(IDS)
    lora = LoraModel(toy, cfg())
    randomize(lora)
    adapted = lora(IDS)
    plain = lora.unwrap(merge=False)
    assert plain is toy and type(toy.blocks[0].attn) is nn.Linear
    assert all(p.requires_grad for p in toy.parameters())
    assert lora.lora_layers() == {} and lora.matched_modules == []
    assert_close(toy(IDS), base_out)

    toy2 = Toy()
    lora2 = LoraModel(toy2, cfg())
    lora2.load_lora_state_dict({k: v.clone() for k, v in LoraModel(Toy(), cfg()).lora_state_dict().items()})
    randomize(lora2)
    merged = lora2.unwrap(merge=True)
    assert not any(isinstance(m, LoraLayer) for m in merged.modules())
    assert_close(merged(IDS), adapted)


def test_tied_lm_head_warns_and_refuses_to_merge():
    lora = LoraModel(Toy(tied=True), cfg(target_modules=["attn"], apply_to_lm_head=True))
    assert "lm_head" in lora.matched_modules
    assert any("lm_head shares its weight with embed.weight" in w for w in lora.warnings)
    with pytest.raises(ValueError, match="Cannot merge lm_head"):
        lora.merge()


def test_multihead_attention_projection_is_skipped():
    model = nn.ModuleDict({"mha": nn.MultiheadAttention(8, 2), "proj": nn.Linear(8, 8)})
    lora = LoraModel(model, cfg())
    assert lora.matched_modules == ["proj"]
    assert any("mha.out_proj" in w and "MultiheadAttention" in w for w in lora.warnings)
