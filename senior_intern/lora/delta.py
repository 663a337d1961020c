"""The one LoRA merge step: ``scaling * B @ A`` in float32, added to a weight, checked, tied weights refused.

Both merges use it: ``LoraBase.merge`` (a live ``LoraLayer`` / ``LoraEmbedding`` folded into its
base, ``LoraModel.merge``) and ``adapters/merge.py`` (a PEFT adapter folder, ours or a foreign
one, folded into a freshly loaded base model). The factors' scaling is the caller's per-layer
value (``lora_scaling``: ``alpha / r``, or ``alpha / sqrt(r)`` with rsLoRA, where PEFT's
``rank_pattern`` / ``alpha_pattern`` give each module its own r and alpha).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn


def lora_scaling(alpha: float, rank: int, use_rslora: bool = False) -> float:
    """PEFT's factor on ``B @ A``: ``alpha / r``, or ``alpha / sqrt(r)`` with rank-stabilised LoRA."""
    return float(alpha) / (math.sqrt(rank) if use_rslora else rank)


def lora_delta(b: torch.Tensor, a: torch.Tensor, scaling: float) -> torch.Tensor:
    """The weight update ``scaling * B @ A`` in float32: B ``[out, r]``, A ``[r, in]`` -> ``[out, in]``."""
    return (b.float() @ a.float()).mul_(scaling)


def _label(name: str) -> str:
    return name or "<unnamed>"


def check_finite_factors(name: str, tensors: Mapping[str, torch.Tensor], context: str = "") -> None:
    """Raise ``ValueError`` naming the layer and the tensor when a LoRA tensor holds NaN or Inf."""
    for key, tensor in tensors.items():
        if not torch.isfinite(tensor).all():
            raise ValueError(
                f"{context}Refusing to merge LoRA layer {_label(name)}: {key} contains NaN or Inf, so the "
                "adapter weights are broken (retrain or load a healthy checkpoint); nothing was written"
            )


def merged_tensor(
    name: str, base: torch.Tensor | None, delta: torch.Tensor, dtype: torch.dtype | None = None, context: str = ""
) -> torch.Tensor:
    """``base + delta`` computed in float32 (``base`` None: just ``delta``), cast to ``dtype``, checked.

    ``dtype`` defaults to float32; the check runs in the dtype that will be stored, so a float16
    overflow is caught. Raises ``ValueError`` naming the layer (``context`` is put in front, e.g.
    the adapter folder) when the result holds NaN or Inf; nothing is written by this function.
    """
    merged = delta if base is None else base.float() + delta
    if dtype is not None:
        merged = merged.to(dtype)
    if not torch.isfinite(merged).all():
        stored = str(dtype or torch.float32).removeprefix("torch.")
        raise ValueError(
            f"{context}Refusing to merge LoRA layer {_label(name)}: the merged weights would contain NaN or Inf "
            f"in {stored}, so the adapter weights are broken or diverged (retrain or load a healthy "
            "checkpoint); nothing was written"
        )
    return merged


def tied_weights(model: nn.Module, weights: Mapping[str, torch.Tensor]) -> dict[str, str]:
    """For each ``{module name: its weight}`` whose tensor the model also holds under another name
    (tied embeddings: ``lm_head.weight`` is ``embed_tokens.weight``), that other parameter name."""
    owners: dict[int, list[str]] = {}
    for pname, param in model.named_parameters(remove_duplicate=False):
        owners.setdefault(id(param), []).append(pname)
    tied = {}
    for name, weight in weights.items():
        others = [n for n in owners.get(id(weight), []) if not n.startswith(f"{name}.")]
        if others:
            tied[name] = others[0]
    return tied


def tied_message(name: str, other: str) -> str:
    """The one wording for a layer that shares its weight (used as a warning and as the refusal)."""
    return (
        f"{name} shares its weight with {other} (tied); merging it would change both, so the merge "
        "refuses it: untie the weights, or train without this layer, to merge"
    )


def refuse_tied(tied: Mapping[str, str], context: str = "") -> None:
    """Raise ``ValueError`` for the first tied layer (``tied_weights``' answer); nothing when empty."""
    if tied:
        name, other = next(iter(tied.items()))
        raise ValueError(f"{context}Cannot merge {name}: {tied_message(name, other)}")
