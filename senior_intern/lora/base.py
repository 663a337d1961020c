"""What every LoRA wrapper shares: state flags, safe merge/unmerge, weight export and import.

A wrapper holds the frozen module it adapts as ``base_layer`` and two low-rank factors whose
product, times ``scaling = alpha / rank``, is the weight update. Subclasses say how the factors
are named and shaped and how their product maps onto the base weight (``_delta_weight``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import nn

from senior_intern.config import LoraConfig
from senior_intern.lora.delta import check_finite_factors, merged_tensor


@dataclass(frozen=True)
class LoraWeights:
    """The LoRA tensors of one layer (detached CPU copies), keyed by their PEFT-relative names.

    For a linear layer ``tensors`` holds ``lora_A.weight`` [r, in], ``lora_B.weight`` [out, r]
    and, with a LoRA bias, ``lora_B.bias`` [out]; for an embedding ``lora_embedding_A``
    [r, num_embeddings] and ``lora_embedding_B`` [embedding_dim, r].
    """

    name: str
    rank: int
    alpha: float
    in_features: int
    out_features: int
    tensors: dict[str, torch.Tensor]


def _shape(t: torch.Tensor | torch.Size) -> str:
    return "[" + ", ".join(str(d) for d in (t.shape if isinstance(t, torch.Tensor) else t)) + "]"


class LoraBase(nn.Module, ABC):
    """Common state and behaviour of ``LoraLayer`` and ``LoraEmbedding`` (not used on its own)."""

    base_layer: nn.Module

    def _init_common(self, cfg: LoraConfig, name: str, in_features: int, out_features: int) -> None:
        if cfg.rank < 1:
            raise ValueError(f"LoRA rank must be at least 1 (layer {name or '<unnamed>'}), got {cfg.rank}")
        if cfg.rank > min(in_features, out_features):
            raise ValueError(
                f"LoRA rank {cfg.rank} is too large for layer {name or '<unnamed>'} "
                f"({in_features} -> {out_features}); the rank must not exceed "
                f"min(in, out) = {min(in_features, out_features)}: lower lora.rank"
            )
        self.name = name
        self.rank = cfg.rank
        self.alpha = float(cfg.alpha)
        self.scaling = cfg.alpha / cfg.rank
        self.in_features = in_features
        self.out_features = out_features
        self.init_method = cfg.init_method
        self.init_scale = float(cfg.init_scale)
        self.merged = False
        self.disabled = False
        self._added_bias = False  # merge() created the base bias (the base had none)

    # --- subclass hooks -----------------------------------------------------------------------
    @abstractmethod
    def lora_tensors(self) -> dict[str, nn.Parameter]:
        """The LoRA parameters by PEFT-relative name (e.g. ``lora_A.weight``)."""

    @abstractmethod
    def _delta_weight(self) -> torch.Tensor:
        """float32 update of the base weight, shaped like ``base_layer.weight``."""

    def _delta_bias(self) -> torch.Tensor | None:
        """float32 update of the base bias, or None when the layer has no LoRA bias."""
        return None

    @abstractmethod
    def reset(self) -> None:
        """Re-initialise the LoRA factors (unmerging first)."""

    # --- properties ---------------------------------------------------------------------------
    @property
    def weight(self) -> torch.Tensor:
        """The (frozen) base weight, so code that reads ``module.weight`` keeps working."""
        return self.base_layer.weight

    @property
    def trainable_parameter_count(self) -> int:
        """Elements in this layer's trainable tensors (LoRA factors, biases that train)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    # --- enable / disable ---------------------------------------------------------------------
    def disable(self) -> None:
        """Pass inputs through the base module only. A merged layer is unmerged first."""
        if self.merged:
            self.unmerge()
        self.disabled = True

    def enable(self) -> None:
        """Add the LoRA update again after ``disable()``."""
        self.disabled = False

    # --- merge / unmerge ----------------------------------------------------------------------
    def check_finite(self) -> None:
        """Raise ``ValueError`` naming the tensor when a LoRA tensor holds NaN or Inf."""
        check_finite_factors(self.name, self.lora_tensors())

    @torch.no_grad()
    def merge(self) -> None:
        """Fold ``scaling * B A`` into the base weight (and a LoRA bias into the base bias).

        The update is computed in float32 and checked in the base's dtype before anything is
        written (``lora/delta.py``, the same step ``adapters/merge.py`` uses): if the merged
        weight would hold NaN or Inf, ``ValueError`` is raised and the base stays untouched.
        Merging a merged layer does nothing.
        """
        if self.merged:
            return
        self.check_finite()
        weight = self.base_layer.weight
        new_weight = merged_tensor(self.name, weight, self._delta_weight(), weight.dtype)
        delta_bias = self._delta_bias()
        bias = getattr(self.base_layer, "bias", None)
        new_bias = None
        if delta_bias is not None:
            new_bias = merged_tensor(self.name, bias, delta_bias, weight.dtype if bias is None else bias.dtype)
        weight.copy_(new_weight)
        if new_bias is not None:
            if bias is None:
                self.base_layer.bias = nn.Parameter(new_bias, requires_grad=False)
                self._added_bias = True
            else:
                bias.copy_(new_bias)
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Subtract the merged update again (exact up to float rounding). No-op when not merged."""
        if not self.merged:
            return
        weight = self.base_layer.weight
        weight.copy_(weight.float() - self._delta_weight())
        delta_bias = self._delta_bias()
        if delta_bias is not None:
            if self._added_bias:
                self.base_layer.bias = None
                self._added_bias = False
            else:
                bias = self.base_layer.bias
                bias.copy_(bias.float() - delta_bias)
        self.merged = False

    # --- weights out / in ---------------------------------------------------------------------
    def get_weights(self) -> LoraWeights:
        """A detached CPU copy of this layer's LoRA tensors."""
        return LoraWeights(
            name=self.name,
            rank=self.rank,
            alpha=self.alpha,
            in_features=self.in_features,
            out_features=self.out_features,
            tensors={k: p.detach().to("cpu", copy=True) for k, p in self.lora_tensors().items()},
        )

    @torch.no_grad()
    def load_weights(self, weights: LoraWeights) -> None:
        """Copy LoRA tensors into this layer (converted to its dtype and device).

        Raises ``ValueError`` naming the tensor when the rank, the set of tensors or a shape
        differs. A merged layer is unmerged, loaded and merged again.
        """
        label = self.name or "<unnamed>"
        if weights.rank != self.rank:
            raise ValueError(f"LoRA layer {label}: the weights have rank {weights.rank}, the layer has rank {self.rank}")
        own = self.lora_tensors()
        for key in own:
            if key not in weights.tensors:
                raise ValueError(f"LoRA layer {label}: tensor {key} is missing from the weights")
        for key, tensor in weights.tensors.items():
            if key not in own:
                raise ValueError(f"LoRA layer {label}: unexpected tensor {key} (the layer has {', '.join(own)})")
            if tuple(tensor.shape) != tuple(own[key].shape):
                raise ValueError(
                    f"LoRA layer {label}: tensor {key} has shape {_shape(tensor)}, expected {_shape(own[key])}"
                )
        was_merged = self.merged
        self.unmerge()
        for key, tensor in weights.tensors.items():
            own[key].copy_(tensor)
        if was_merged:
            self.merge()

    def extra_repr(self) -> str:
        """Rank, alpha and state, shown in ``print(model)``."""
        state = ", merged" if self.merged else ", disabled" if self.disabled else ""
        return f"name={self.name!r}, rank={self.rank}, alpha={self.alpha:g}{state}"
