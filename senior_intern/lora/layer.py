"""``LoraLayer``: low-rank adaptation of one ``nn.Linear``.

    y = W0 x + b0 + (alpha / r) * (B (A dropout(x)) + b_B)

with A [r, in] and B [out, r] trainable and W0 [out, in], b0 [out] frozen. ``b_B`` exists only
with a LoRA bias (``bias`` = ``lora_only`` or ``all``) and is scaled like PEFT's ``lora_bias``.
Parameter names follow PEFT (``base_layer.weight``, ``lora_A.weight``, ``lora_B.weight``,
``lora_B.bias``), so a model's state-dict keys are PEFT's keys without the adapter name.

Speed and memory: in training the layer runs as one autograd function (``functional.py``):
dropout zeroes drawn *positions* of the input (``dropout.DropPlan``), its ``1 / (1 - p)`` scale is
folded with ``alpha / r`` into the rank-r intermediate, the B product is accumulated onto the
base output with one ``addmm``, and backward keeps only ``x`` (shared by layers that read the
same input), the positions and ``h`` [.., r]. Under a bfloat16/float16 base the float32 master
factors are cast to the base's dtype inside the function (rank-r copies), so the fused path runs
entirely in the base's dtype and returns float32 gradients to the factors; a base of any other
kind takes the plain autograd path with the same drop plan. In eval
mode or with p = 0 there is no dropout work at all, and a no-grad call on many rows (prompt
processing, evaluation) multiplies once by ``W0 + (alpha / r) B A`` formed on the fly, which
costs less than the two thin products and the extra pass over the output.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from senior_intern.config import LoraBias, LoraConfig, LoraInit
from senior_intern.lora.base import LoraBase
from senior_intern.lora.dropout import DropPlan
from senior_intern.lora.functional import LoraLinearFunction, LoraSpec
from senior_intern.models.quantized import FrozenLinear


class LoraLayer(LoraBase):
    """A frozen ``nn.Linear`` plus a trainable low-rank update ``(alpha / r) B A``.

    ``base``: the linear layer to adapt (kept as ``base_layer``; its weight is frozen, its bias
    trains only with ``bias = all``). ``cfg``: rank, alpha, dropout, bias mode and init.
    ``name``: the layer's qualified name, used in error messages. ``dtype`` / ``device``: where
    the LoRA factors live (default: those of the base weight).

    Raises ``ValueError`` when the rank exceeds ``min(in_features, out_features)`` or the dropout
    is outside [0, 1).
    """

    def __init__(
        self,
        base: nn.Linear,
        cfg: LoraConfig,
        name: str = "",
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise TypeError(f"LoraLayer wraps an nn.Linear, got {type(base).__name__} for {name or '<unnamed>'}")
        self._init_common(cfg, name, base.in_features, base.out_features)
        if not 0.0 <= cfg.dropout < 1.0:
            raise ValueError(f"LoRA dropout must be in [0, 1) (layer {name or '<unnamed>'}), got {cfg.dropout}")
        self.dropout = float(cfg.dropout)
        self.bias_mode = LoraBias(cfg.bias)
        self.base_layer = base
        if isinstance(base, FrozenLinear):  # a compact base: no need to dequantise it to learn its dtype
            factory = {"device": device or base.qdata.device, "dtype": dtype or base.compute_dtype}
        else:
            factory = {"device": device or base.weight.device, "dtype": dtype or base.weight.dtype}
        self.lora_A = nn.Linear(self.in_features, self.rank, bias=False, **factory)
        self.lora_B = nn.Linear(self.rank, self.out_features, bias=self.bias_mode != LoraBias.NONE, **factory)
        if not isinstance(base, FrozenLinear):
            base.weight.requires_grad_(False)
        if base.bias is not None:
            base.bias.requires_grad_(self.bias_mode == LoraBias.ALL)
        self.reset()

    @classmethod
    def from_base(cls, base: nn.Linear, cfg: LoraConfig, name: str = "", **kwargs) -> "LoraLayer":
        """Wrap ``base`` (same as the constructor; reads well at call sites)."""
        return cls(base, cfg, name, **kwargs)

    @property
    def bias(self) -> torch.Tensor | None:
        """The base bias (or None), so code that reads ``module.bias`` keeps working."""
        return self.base_layer.bias

    # --- initialisation -----------------------------------------------------------------------
    @torch.no_grad()
    def reset(self) -> None:
        """Re-initialise A (``init_method`` times ``init_scale``) and zero B (unmerging first).

        kaiming_uniform: U(-1/sqrt(in), 1/sqrt(in)) as ``kaiming_uniform_(a=sqrt(5))`` gives (PEFT's
        default); gaussian: N(0, (1/r)^2); zeros: A and B both zero.
        """
        self.unmerge()
        a = self.lora_A.weight
        if self.init_method == LoraInit.KAIMING_UNIFORM:
            nn.init.kaiming_uniform_(a, a=math.sqrt(5))
            a.mul_(self.init_scale)
        elif self.init_method == LoraInit.GAUSSIAN:
            nn.init.normal_(a, mean=0.0, std=1.0 / self.rank)
            a.mul_(self.init_scale)
        else:
            a.zero_()
        self.lora_B.weight.zero_()
        if self.lora_B.bias is not None:
            self.lora_B.bias.zero_()

    # --- forward ------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., in] -> [..., out]: base output plus the scaled low-rank update."""
        if self.merged or self.disabled:
            return self.base_layer(x)
        spec = self.lora_spec(x.shape, x.device)
        a, b = self.lora_A.weight, self.lora_B.weight
        base = self.base_layer
        fused = self.fused_ok(x)
        if fused and spec.drop is None and self._merge_on_the_fly(x):
            # W + s B A costs r*in*out multiply-adds once; the factored update costs r*(in+out) per row.
            b_c, a_c, lb = (t if t is None else t.to(x.dtype) for t in (b, a, self.lora_B.bias))
            weight = torch.addmm(base.weight, b_c, a_c, alpha=self.scaling)
            bias = base.bias
            if lb is not None:
                bias = lb * self.scaling if bias is None else bias + lb * self.scaling
            return F.linear(x, weight, bias)
        if fused:
            weight = base if isinstance(base, FrozenLinear) else base.weight  # a compact base dequantises inside
            y = LoraLinearFunction.apply(x.reshape(-1, self.in_features), weight, base.bias, a, b, self.lora_B.bias, spec)
            return y.view(*x.shape[:-1], self.out_features)
        result = base(x)
        lora_in = x if x.dtype == a.dtype else x.to(a.dtype)
        if spec.drop is not None:
            lora_in = spec.drop.apply(lora_in)
        update = F.linear(F.linear(lora_in, a) * spec.h_scale, b)  # both scales on the rank-r tensor
        if self.lora_B.bias is not None:
            update = update + self.lora_B.bias * self.scaling
        return result + update.to(result.dtype)

    def lora_spec(self, shape: torch.Size, device: torch.device) -> LoraSpec:
        """Scales and, in training with p > 0, a fresh drop plan for an input of ``shape`` on ``device``."""
        if self.training and self.dropout > 0.0:
            drop = DropPlan.draw(shape, self.dropout, device)
            return LoraSpec(self.scaling / (1.0 - self.dropout), self.scaling, drop)
        return LoraSpec(self.scaling, self.scaling, None)

    def _merge_on_the_fly(self, x: torch.Tensor) -> bool:
        """True for a no-grad call on enough rows that one GEMM with ``W + s B A`` is cheaper than
        the factored update (rows * (in + out) > in * out: prompt processing, evaluation; not
        token-by-token decoding). Same mathematics, only float summation order differs. The
        caller has checked ``fused_ok(x)``."""
        if torch.is_grad_enabled():
            return False
        rows = x.numel() // self.in_features
        return rows * (self.in_features + self.out_features) > self.in_features * self.out_features

    def fused_ok(self, x: torch.Tensor) -> bool:
        """True when ``LoraLinearFunction`` computes what the module would: a plain ``nn.Linear``
        base with a frozen weight (or a compact ``FrozenLinear``), one dtype for input and base,
        and factors in that dtype or float32 (master factors under a bfloat16/float16 base; the
        function computes in the base's dtype and returns float32 gradients for them)."""
        base, a = self.base_layer, self.lora_A.weight
        if isinstance(base, FrozenLinear):
            return (x.dtype == base.compute_dtype
                    and a.dtype == self.lora_B.weight.dtype and a.dtype in (x.dtype, torch.float32)
                    and not base._forward_hooks and not base._forward_pre_hooks)
        return (
            type(base).forward is nn.Linear.forward
            and not base.weight.requires_grad
            and x.dtype == base.weight.dtype
            and a.dtype == self.lora_B.weight.dtype and a.dtype in (x.dtype, torch.float32)
            and not base._forward_hooks and not base._forward_pre_hooks
        )

    @torch.no_grad()
    def merge(self) -> None:
        """Fold the update into the base weight; a compact base (``FrozenLinear``) is dequantised
        into an ordinary ``nn.Linear`` first (this layer only), since blocks cannot hold it."""
        if not self.merged and isinstance(self.base_layer, FrozenLinear):
            self.check_finite()
            self.base_layer = self.base_layer.to_dense()
        super().merge()

    # --- hooks for LoraBase -------------------------------------------------------------------
    def lora_tensors(self) -> dict[str, nn.Parameter]:
        """``lora_A.weight`` [r, in], ``lora_B.weight`` [out, r] and, with a LoRA bias, ``lora_B.bias`` [out]."""
        factors = {"lora_A.weight": self.lora_A.weight, "lora_B.weight": self.lora_B.weight}
        if self.lora_B.bias is not None:
            factors["lora_B.bias"] = self.lora_B.bias
        return factors

    def _delta_weight(self) -> torch.Tensor:
        """float32 [out, in] = scaling * B A."""
        return (self.lora_B.weight.float() @ self.lora_A.weight.float()).mul_(self.scaling)

    def _delta_bias(self) -> torch.Tensor | None:
        """float32 [out] = scaling * b_B, or None without a LoRA bias."""
        if self.lora_B.bias is None:
            return None
        return self.lora_B.bias.float() * self.scaling
