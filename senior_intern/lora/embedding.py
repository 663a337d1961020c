"""``LoraEmbedding``: low-rank adaptation of one ``nn.Embedding`` (PEFT's layout).

    y = E0[ids] + (alpha / r) * A.T[ids] B.T

with ``lora_embedding_A`` [r, num_embeddings] and ``lora_embedding_B`` [embedding_dim, r], the
names and shapes PEFT saves. As in PEFT, A starts at zero and B from N(0, 1) (times
``init_scale``), so the output starts equal to the base; ``init_method = zeros`` zeroes both.
Embeddings get no dropout and no LoRA bias (PEFT has neither for embeddings).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from senior_intern.config import LoraBias, LoraConfig, LoraInit
from senior_intern.lora.base import LoraBase
from senior_intern.lora.delta import lora_delta


class LoraEmbedding(LoraBase):
    """A frozen ``nn.Embedding`` plus a trainable low-rank update of its table.

    ``base``: the embedding to adapt (kept as ``base_layer``, frozen). ``cfg``: rank, alpha,
    init (``cfg.bias`` must be ``none``). ``name``: qualified name for messages. ``dtype`` /
    ``device``: where the factors live (default: those of the base table).
    """

    def __init__(
        self,
        base: nn.Embedding,
        cfg: LoraConfig,
        name: str = "",
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(base, nn.Embedding):
            raise TypeError(f"LoraEmbedding wraps an nn.Embedding, got {type(base).__name__} for {name or '<unnamed>'}")
        self._init_common(cfg, name, base.num_embeddings, base.embedding_dim)
        if LoraBias(cfg.bias) != LoraBias.NONE:
            raise ValueError(
                f"Embedding {name or '<unnamed>'} cannot take a LoRA bias (bias = {LoraBias(cfg.bias).value}); "
                "PEFT has no bias for LoRA embeddings: set lora.bias = 'none' or apply_to_embeddings = false"
            )
        self.base_layer = base
        factory = {"device": device or base.weight.device, "dtype": dtype or base.weight.dtype}
        self.lora_embedding_A = nn.Parameter(torch.empty(self.rank, self.in_features, **factory))
        self.lora_embedding_B = nn.Parameter(torch.empty(self.out_features, self.rank, **factory))
        base.weight.requires_grad_(False)
        self.reset()

    @classmethod
    def from_base(cls, base: nn.Embedding, cfg: LoraConfig, name: str = "", **kwargs) -> "LoraEmbedding":
        """Wrap ``base`` (same as the constructor)."""
        return cls(base, cfg, name, **kwargs)

    @torch.no_grad()
    def reset(self) -> None:
        """A = 0 and B ~ N(0, 1) * init_scale (PEFT's embedding init); zeros: both 0. Unmerges first."""
        self.unmerge()
        self.lora_embedding_A.zero_()
        if self.init_method == LoraInit.ZEROS:
            self.lora_embedding_B.zero_()
        else:
            nn.init.normal_(self.lora_embedding_B).mul_(self.init_scale)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """ids [...] (int) -> [..., embedding_dim]."""
        result = self.base_layer(ids)
        if self.merged or self.disabled:
            return result
        base = self.base_layer
        hidden = F.embedding(  # [..., r]: rows of A.T
            ids, self.lora_embedding_A.t(), base.padding_idx, base.max_norm, base.norm_type,
            base.scale_grad_by_freq, base.sparse,
        )
        update = F.linear(hidden * self.scaling, self.lora_embedding_B)  # [..., dim]
        return result + update.to(result.dtype)

    def lora_tensors(self) -> dict[str, nn.Parameter]:
        """``lora_embedding_A`` [r, num_embeddings] and ``lora_embedding_B`` [embedding_dim, r]."""
        return {"lora_embedding_A": self.lora_embedding_A, "lora_embedding_B": self.lora_embedding_B}

    def _delta_weight(self) -> torch.Tensor:
        """float32 [num_embeddings, dim] = scaling * (B A).T."""
        return lora_delta(self.lora_embedding_B, self.lora_embedding_A, self.scaling).t()
