"""LoraModel on a tiny Hugging Face Llama: default targets, summary, gradient checkpointing."""

from __future__ import annotations

import copy

import torch
from torch.testing import assert_close

from senior_intern.config import DEFAULT_TARGET_MODULES, LoraConfig
from senior_intern.lora import LoraLayer, LoraModel
from tests.conftest import make_tiny_llama

IDS = torch.tensor([[5, 17, 42, 7, 99, 3, 250, 11], [1, 2, 3, 4, 5, 6, 7, 8]])


def test_default_targets_wrap_the_seven_projections_of_every_layer():
    lora = LoraModel(make_tiny_llama(), LoraConfig(rank=4))
    assert len(lora.matched_modules) == 2 * 7
    assert lora.target_module_names() == sorted(DEFAULT_TARGET_MODULES)
    assert lora.warnings == []
    # q,o: 64x64; k,v: 64->32; gate,up: 64->128; down: 128->64; r * (in + out) each, 2 layers
    per_layer = 4 * ((64 + 64) * 2 + (64 + 32) * 2 + (64 + 128) * 3)
    assert lora.trainable_parameter_count == 2 * per_layer
    assert lora.parameter_summary().startswith(f"trainable {2 * per_layer / 1000:.1f}K / total ")


def enable_checkpointing(model) -> None:
    enable = getattr(model, "activation_checkpointing_enable", None)
    if enable is not None:  # transformers >= 5.2x
        enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def grads_with(checkpointing: bool) -> tuple[dict[str, torch.Tensor], int]:
    model = make_tiny_llama()
    lora = LoraModel(model, LoraConfig(rank=4, dropout=0.5))
    with torch.no_grad():
        for p in lora.lora_parameters():
            p.normal_(0, 0.1, generator=torch.Generator().manual_seed(p.numel()))
    if checkpointing:
        enable_checkpointing(model)
    calls = []
    model.model.layers[0].self_attn.q_proj.register_forward_hook(lambda *_: calls.append(1))
    lora.train()
    torch.manual_seed(123)
    lora(input_ids=IDS, labels=IDS).loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}, len(calls)


def test_gradient_checkpointing_recomputes_the_same_dropout_masks():
    (plain, plain_calls), (checkpointed, checkpointed_calls) = grads_with(False), grads_with(True)
    assert (plain_calls, checkpointed_calls) == (1, 2)  # the layer really was recomputed
    assert plain.keys() == checkpointed.keys()
    for name in plain:
        assert_close(checkpointed[name], plain[name], atol=1e-6, rtol=1e-5)


def test_checkpointed_decoder_layers_train_while_their_children_stay_in_eval():
    model = make_tiny_llama()
    lora = LoraModel(model, LoraConfig(rank=4))
    enable_checkpointing(model)
    lora.train()
    layer = model.model.layers[0]
    assert layer.training and not layer.self_attn.training and not layer.mlp.training
    assert isinstance(layer.self_attn.q_proj, LoraLayer) and layer.self_attn.q_proj.training


def test_wrapping_a_copy_leaves_the_original_untouched():
    base = make_tiny_llama()
    LoraModel(copy.deepcopy(base), LoraConfig(rank=4))
    assert not any(isinstance(m, LoraLayer) for m in base.modules())
    assert all(p.requires_grad for p in base.parameters())
