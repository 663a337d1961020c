"""Parity with the real PEFT library on a tiny Llama: outputs, merged weights, gradients, files."""

from __future__ import annotations

import copy
import json
import warnings

import pytest
import torch
from safetensors.torch import save_file
from torch.testing import assert_close

from senior_intern.config import LoraBias, LoraConfig
from senior_intern.lora import LoraModel, peft_adapter_config
from tests.conftest import make_tiny_llama

peft = pytest.importorskip("peft")
from peft import LoraConfig as PeftLoraConfig  # noqa: E402
from peft import PeftModel, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict  # noqa: E402

IDS = torch.tensor([[5, 17, 42, 7, 99, 3, 250, 11], [1, 2, 3, 4, 5, 6, 7, 8]])
TOL = {"atol": 1e-5, "rtol": 1e-5}


def our_cfg(**kw) -> LoraConfig:
    kw.setdefault("rank", 4)
    kw.setdefault("alpha", 8.0)
    kw.setdefault("dropout", 0.0)
    return LoraConfig(**kw)


def peft_model(base, cfg: LoraConfig, targets):
    d = peft_adapter_config(cfg, "tiny", targets)
    d["inference_mode"] = False
    d.pop("peft_type")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return get_peft_model(copy.deepcopy(base), PeftLoraConfig(**d))


def randomize(params, seed=3):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in params:
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)


def lora_keys(keys):
    return sorted(k for k in keys if "lora_" in k)


CASES = {
    "default": ({}, None, {}),
    "all-linear": ({"target_modules": ["all-linear"]}, None, {}),
    "lora_only": ({"bias": LoraBias.LORA_ONLY}, None, {"attention_bias": True, "mlp_bias": True}),
    "all": ({"bias": LoraBias.ALL}, None, {"attention_bias": True, "mlp_bias": True}),
    "embed+head": (
        {"target_modules": ["q_proj", "v_proj"], "apply_to_embeddings": True, "apply_to_lm_head": True},
        ["q_proj", "v_proj", "embed_tokens", "lm_head"],
        {},
    ),
}


@pytest.fixture(params=list(CASES))
def pair(request):
    """(ours, peft) over deep copies of the same tiny Llama, with our random LoRA weights in both."""
    cfg_kw, targets, llama_kw = CASES[request.param]
    base = make_tiny_llama(**llama_kw)
    cfg = our_cfg(**cfg_kw)
    ours = LoraModel(copy.deepcopy(base), cfg)
    theirs = peft_model(base, cfg, targets)
    randomize(ours.lora_parameters())
    result = set_peft_model_state_dict(theirs, ours.lora_state_dict())
    assert result.unexpected_keys == []
    assert [k for k in result.missing_keys if "lora_" in k] == []
    return ours, theirs, request.param


def test_same_outputs(pair):
    ours, theirs, _ = pair
    ours.eval()
    theirs.eval()
    with torch.no_grad():
        adapted = ours(input_ids=IDS).logits
        assert_close(adapted, theirs(input_ids=IDS).logits, **TOL)
        ours.disable()
        assert not torch.allclose(ours(input_ids=IDS).logits, adapted, atol=1e-3)  # the adapter matters


def test_same_state_dict_keys(pair):
    ours, theirs, _ = pair
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        peft_sd = get_peft_model_state_dict(theirs, save_embedding_layers=False)
    assert sorted(ours.lora_state_dict()) == sorted(peft_sd)
    for key, value in peft_sd.items():
        assert_close(ours.lora_state_dict()[key], value)


def test_same_merged_weights(pair):
    ours, theirs, _ = pair
    ours.merge()
    merged = theirs.merge_and_unload().state_dict()
    for name, layer in ours.lora_layers().items():
        assert_close(layer.base_layer.weight, merged[f"{name}.weight"], **TOL)
        if getattr(layer.base_layer, "bias", None) is not None:
            assert_close(layer.base_layer.bias, merged[f"{name}.bias"], **TOL)


def test_same_gradients(pair):
    ours, theirs, _ = pair
    ours.train()
    theirs.train()
    for model in (ours, theirs):
        model(input_ids=IDS, labels=IDS).loss.backward()
    grads = {n.replace(".default", ""): p.grad for n, p in theirs.named_parameters() if p.requires_grad}
    for name, p in ours.model.named_parameters():
        if p.requires_grad:
            assert_close(p.grad, grads["base_model.model." + name], atol=1e-5, rtol=1e-4)


def test_peft_state_dict_loads_into_ours():
    base = make_tiny_llama()
    cfg = our_cfg()
    theirs = peft_model(base, cfg, None)
    randomize([p for p in theirs.parameters() if p.requires_grad], seed=11)
    ours = LoraModel(copy.deepcopy(base), cfg)
    result = ours.load_lora_state_dict(get_peft_model_state_dict(theirs))
    assert result.missing_keys == [] and result.unexpected_keys == []
    with torch.no_grad():
        assert_close(ours(input_ids=IDS).logits, theirs(input_ids=IDS).logits, **TOL)


def test_peft_saved_embedding_weights_load_into_ours(tmp_path):
    base = make_tiny_llama()
    cfg = our_cfg(target_modules=["q_proj"], apply_to_embeddings=True)
    theirs = peft_model(base, cfg, ["q_proj", "embed_tokens"])
    randomize([p for p in theirs.parameters() if p.requires_grad], seed=12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        saved = get_peft_model_state_dict(theirs)  # includes embed_tokens.base_layer.weight
    assert "base_model.model.model.embed_tokens.base_layer.weight" in saved
    ours = LoraModel(copy.deepcopy(base), cfg)
    assert ours.load_lora_state_dict(saved).unexpected_keys == []
    with torch.no_grad():
        assert_close(ours(input_ids=IDS).logits, theirs(input_ids=IDS).logits, **TOL)


@pytest.mark.parametrize("bias", [LoraBias.NONE, LoraBias.LORA_ONLY])
def test_adapter_folder_loads_with_peft_from_pretrained(tmp_path, bias):
    base = make_tiny_llama(attention_bias=True)
    cfg = our_cfg(bias=bias, dropout=0.05)
    ours = LoraModel(copy.deepcopy(base), cfg)
    randomize(ours.lora_parameters(), seed=5)
    save_file({k: v.contiguous() for k, v in ours.lora_state_dict().items()}, str(tmp_path / "adapter_model.safetensors"))
    config = peft_adapter_config(cfg, "tiny-llama", ours.target_module_names())
    (tmp_path / "adapter_config.json").write_text(json.dumps(config), encoding="utf-8")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = PeftModel.from_pretrained(copy.deepcopy(base), str(tmp_path))
    assert loaded.peft_config["default"].r == 4
    assert loaded.peft_config["default"].lora_bias == (bias != LoraBias.NONE)
    ours.eval()
    with torch.no_grad():
        assert_close(ours(input_ids=IDS).logits, loaded(input_ids=IDS).logits, **TOL)


def test_same_modules_as_peft_all_linear():
    base = make_tiny_llama()
    cfg = our_cfg(target_modules=["all-linear"])
    ours = LoraModel(copy.deepcopy(base), cfg)
    theirs = peft_model(base, cfg, None)
    assert lora_keys(ours.lora_state_dict()) == lora_keys(get_peft_model_state_dict(theirs))
    assert not any("lm_head" in k for k in ours.lora_state_dict())
