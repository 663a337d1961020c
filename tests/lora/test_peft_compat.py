"""peft_adapter_config: the fields PEFT 0.21 knows, the bias/init mapping, target modules."""

from __future__ import annotations

import dataclasses
import json

import pytest

from senior_intern.config import LoraBias, LoraConfig, LoraInit
from senior_intern.lora import peft_adapter_config

peft = pytest.importorskip("peft")


def test_every_key_is_a_peft_lora_config_field_and_peft_reads_it_back(tmp_path):
    cfg = LoraConfig(rank=8, alpha=16.0, dropout=0.1, target_modules=["q_proj", "v_proj"])
    config = peft_adapter_config(cfg, "org/base-model")
    fields = {f.name for f in dataclasses.fields(peft.LoraConfig)}
    assert set(config) - fields == set()
    (tmp_path / "adapter_config.json").write_text(json.dumps(config), encoding="utf-8")
    loaded = peft.PeftConfig.from_pretrained(str(tmp_path))
    assert isinstance(loaded, peft.LoraConfig)
    assert (loaded.peft_type, loaded.task_type) == (peft.PeftType.LORA, "CAUSAL_LM")
    assert loaded.r == 8 and loaded.lora_alpha == 16 and loaded.lora_dropout == pytest.approx(0.1)
    assert set(loaded.target_modules) == {"q_proj", "v_proj"}
    assert loaded.base_model_name_or_path == "org/base-model"
    assert loaded.fan_in_fan_out is False and loaded.use_rslora is False and loaded.use_dora is False
    assert loaded.modules_to_save is None


@pytest.mark.parametrize(
    ("bias", "init", "expected"),
    [
        (LoraBias.NONE, LoraInit.KAIMING_UNIFORM, ("none", False, True)),
        (LoraBias.NONE, LoraInit.GAUSSIAN, ("none", False, "gaussian")),
        (LoraBias.NONE, LoraInit.ZEROS, ("none", False, True)),
        (LoraBias.LORA_ONLY, LoraInit.GAUSSIAN, ("none", True, True)),
        (LoraBias.ALL, LoraInit.KAIMING_UNIFORM, ("all", True, True)),
    ],
)
def test_bias_and_init_mapping(bias, init, expected):
    config = peft_adapter_config(LoraConfig(bias=bias, init_method=init), "m")
    assert (config["bias"], config["lora_bias"], config["init_lora_weights"]) == expected
    peft.LoraConfig(**{k: v for k, v in config.items() if k != "peft_type"})  # PEFT accepts the combination


def test_alpha_is_an_int_when_whole():
    assert peft_adapter_config(LoraConfig(alpha=32.0), "m")["lora_alpha"] == 32
    assert isinstance(peft_adapter_config(LoraConfig(alpha=32.0), "m")["lora_alpha"], int)
    assert peft_adapter_config(LoraConfig(alpha=12.5), "m")["lora_alpha"] == 12.5


def test_target_modules():
    default = LoraConfig()
    assert peft_adapter_config(default, "m")["target_modules"] == list(default.target_modules)
    assert peft_adapter_config(default, "m", ["q_proj"])["target_modules"] == ["q_proj"]
    assert peft_adapter_config(LoraConfig(target_modules=["all-linear"]), "m")["target_modules"] == "all-linear"
    extra = LoraConfig(target_modules=["q_proj"], apply_to_embeddings=True, apply_to_lm_head=True)
    assert peft_adapter_config(extra, "m")["target_modules"] == ["q_proj", "embed_tokens", "lm_head"]
    mixed = LoraConfig(target_modules=["all-linear"], apply_to_lm_head=True)
    with pytest.raises(ValueError, match="target_module_names"):
        peft_adapter_config(mixed, "m")
    assert peft_adapter_config(mixed, "m", ["q_proj", "lm_head"])["target_modules"] == ["q_proj", "lm_head"]
