"""PEFT's ``adapter_config.json`` for an adapter trained with our ``LoraConfig``.

Mapping (checked against PEFT 0.21's ``LoraConfig``):

============================  ==========================================================
ours                          PEFT
============================  ==========================================================
rank, alpha, dropout          ``r``, ``lora_alpha``, ``lora_dropout``
bias = none                   ``bias = "none"``, ``lora_bias = false``
bias = lora_only              ``bias = "none"``, ``lora_bias = true`` (a bias on LoRA B)
bias = all                    ``bias = "all"``, ``lora_bias = true``
init kaiming_uniform          ``init_lora_weights = true``
init gaussian                 ``"gaussian"`` (``true`` with a LoRA bias: PEFT allows no other)
init zeros                    ``true`` (PEFT has no "both zero" init; the saved weights rule)
============================  ==========================================================

``init_scale`` has no PEFT field; it only matters before the first step, and an adapter's saved
weights replace any initialisation when PEFT loads it.
"""

from __future__ import annotations

from typing import Any

from senior_intern.config import ALL_LINEAR, LoraBias, LoraConfig, LoraInit

EMBEDDING_NAME = "embed_tokens"  # Hugging Face's name for the input embedding
LM_HEAD_NAME = "lm_head"


def _peft_targets(cfg: LoraConfig, target_modules: list[str] | None) -> str | list[str]:
    if target_modules is not None:
        return list(target_modules)
    extra = ([EMBEDDING_NAME] if cfg.apply_to_embeddings else []) + ([LM_HEAD_NAME] if cfg.apply_to_lm_head else [])
    if ALL_LINEAR in cfg.target_modules:
        if extra or len(cfg.target_modules) > 1:
            raise ValueError(
                "target_modules mixes 'all-linear' with other modules; PEFT cannot express that: pass the "
                "adapted module names explicitly (LoraModel.target_module_names())"
            )
        return ALL_LINEAR
    return list(dict.fromkeys([*cfg.target_modules, *extra]))


def peft_adapter_config(
    cfg: LoraConfig, base_model_name_or_path: str, target_modules: list[str] | None = None
) -> dict[str, Any]:
    """The content of ``adapter_config.json`` that ``PeftModel.from_pretrained`` accepts.

    ``target_modules``: the adapted module names as PEFT should match them (e.g.
    ``LoraModel.target_module_names()``); by default ``cfg.target_modules`` plus ``embed_tokens``
    / ``lm_head`` when embeddings / the LM head are adapted (Hugging Face names).
    """
    bias = LoraBias(cfg.bias)
    lora_bias = bias != LoraBias.NONE
    init: bool | str = True
    if LoraInit(cfg.init_method) == LoraInit.GAUSSIAN and not lora_bias:
        init = "gaussian"
    alpha = int(cfg.alpha) if float(cfg.alpha).is_integer() else float(cfg.alpha)
    return {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "auto_mapping": None,
        "base_model_name_or_path": base_model_name_or_path,
        "revision": None,
        "inference_mode": True,
        "r": cfg.rank,
        "lora_alpha": alpha,
        "lora_dropout": float(cfg.dropout),
        "target_modules": _peft_targets(cfg, target_modules),
        "exclude_modules": None,
        "bias": "all" if bias == LoraBias.ALL else "none",
        "lora_bias": lora_bias,
        "fan_in_fan_out": False,
        "modules_to_save": None,
        "init_lora_weights": init,
        "use_rslora": False,
        "use_dora": False,
        "layers_to_transform": None,
        "layers_pattern": None,
        "rank_pattern": {},
        "alpha_pattern": {},
        "layer_replication": None,
    }
