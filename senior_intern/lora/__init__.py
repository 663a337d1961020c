"""LoRA: low-rank adapters for ``nn.Linear`` and ``nn.Embedding``, injected into any model.

``LoraModel(model, cfg)`` wraps the matching layers in place; ``LoraLayer`` / ``LoraEmbedding``
are the per-layer wrappers; ``peft_adapter_config`` writes PEFT's adapter config so saved
adapters load in PEFT, transformers and vLLM.
"""

from senior_intern.lora.base import LoraBase, LoraWeights
from senior_intern.lora.dropout import DropPlan, drop_positions, keep_mask
from senior_intern.lora.fused_mlp import fuse_mlps, unfuse_mlps
from senior_intern.lora.embedding import LoraEmbedding
from senior_intern.lora.layer import LoraLayer
from senior_intern.lora.model import PEFT_PREFIX, LoadResult, LoraModel
from senior_intern.lora.peft_compat import peft_adapter_config
from senior_intern.lora.targets import name_matches, select_targets

__all__ = [
    "PEFT_PREFIX",
    "DropPlan",
    "LoadResult",
    "LoraBase",
    "LoraEmbedding",
    "LoraLayer",
    "LoraModel",
    "LoraWeights",
    "drop_positions",
    "fuse_mlps",
    "keep_mask",
    "name_matches",
    "peft_adapter_config",
    "select_targets",
    "unfuse_mlps",
]
