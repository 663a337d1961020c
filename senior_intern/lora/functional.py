"""The LoRA linear map as one autograd function: less memory and fewer passes than autograd's graph.

    y = x W^T + b + (h_scale * drop(x) A^T) B^T + b_scale * b_B

with ``x`` [N, in], the frozen base ``W`` [out, in] / ``b`` [out], ``A`` [r, in], ``B`` [out, r],
an optional LoRA bias ``b_B`` [out], ``h_scale = (alpha / r) / (1 - p)`` and ``b_scale = alpha / r``.

What autograd would keep for the backward pass of that expression: the dropped copy of ``x``
(a full [N, in] tensor per adapted layer) and the mask. ``LoraLinearFunction`` keeps ``x`` itself
(the very tensor the caller passed, so q/k/v, which share their input, keep it once between
them), the drop plan (sorted positions: 0.4 bytes per element at p = 0.05) and the rank-r
intermediate ``h`` [N, r]; the dropped copy is rebuilt in backward with one ``index_fill_``.
Backward also reuses that buffer for the masked input gradient and accumulates every
contribution into one [N, in] tensor instead of autograd's per-branch sums.

A compact frozen base (``models.quantized.FrozenLinear``) may stand in for ``W``: its products
run on the weight dequantised a slice of rows at a time into scratch (``base_linear`` and
``base_input_grad``: ``FrozenLinear.mm_t`` / ``mm``), it is not saved, and it is dequantised again
in backward, so no float copy of the weight lives between the passes, nor whole during one.

``project`` / ``project_backward`` are the two halves, shared with the fused MLP function
(``fused_mlp.py``). The mathematics is the plain computation's; only float summation order may
differ (tests: ``tests/lora/test_fast_functional.py``).
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import torch

from senior_intern.lora.dropout import DropPlan
from senior_intern.models.quantized import FrozenLinear


@functools.lru_cache(maxsize=None)
def _nothing(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A 0-d tensor to pass as ``addmm``'s input when ``beta = 0`` ignores it (scaled GEMMs)."""
    return torch.empty((), dtype=dtype, device=device)


def scaled_mm(m1: torch.Tensor, m2: torch.Tensor, scale: float) -> torch.Tensor:
    """``scale * (m1 @ m2)`` in one GEMM (the scale is the GEMM's alpha)."""
    return torch.addmm(_nothing(m1.dtype, m1.device), m1, m2, beta=0.0, alpha=scale)


def base_linear(x: torch.Tensor, weight: torch.Tensor | FrozenLinear, bias: torch.Tensor | None) -> torch.Tensor:
    """``x W^T (+ bias)`` [N, out] for a float ``weight`` or a compact base (applied in slices)."""
    if isinstance(weight, FrozenLinear):
        return weight.mm_t(x, bias)
    return torch.mm(x, weight.t()) if bias is None else torch.addmm(bias, x, weight.t())


def base_input_grad(g: torch.Tensor, weight: torch.Tensor | FrozenLinear, acc: torch.Tensor | None) -> torch.Tensor:
    """``g W`` [N, in], added into ``acc`` when given (and returned), for a float or compact ``weight``."""
    if isinstance(weight, FrozenLinear):
        return weight.mm(g, out=acc, accumulate=acc is not None)
    return torch.mm(g, weight) if acc is None else acc.addmm_(g, weight)


def saved_weight(weight: torch.Tensor | FrozenLinear) -> tuple[torch.Tensor | None, FrozenLinear | None]:
    """(tensor to ``save_for_backward``, compact source to keep on ``ctx``): a compact base saves nothing."""
    return (weight, None) if isinstance(weight, torch.Tensor) else (None, weight)


@dataclass(frozen=True)
class LoraSpec:
    """Non-tensor settings of one LoRA projection for one call."""

    h_scale: float  # applied to h = drop(x) A^T: alpha / r, divided by (1 - p) when dropping
    b_scale: float  # applied to the LoRA bias: alpha / r
    drop: DropPlan | None  # elements of x the dropout zeroes (None: no dropout)


def project(x: torch.Tensor, weight: torch.Tensor | FrozenLinear, bias: torch.Tensor | None, a: torch.Tensor | None,
            b: torch.Tensor | None, lora_bias: torch.Tensor | None, spec: LoraSpec | None
            ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Forward of one projection without autograd: x [N, in] -> (y [N, out], h [N, r] or None).

    ``a`` None means a plain linear layer (no LoRA); then ``spec`` is ignored and ``h`` is None.
    """
    y = base_linear(x, weight, bias)
    if a is None:
        return y, None
    lora_in = spec.drop.apply(x) if spec.drop is not None else x
    h = scaled_mm(lora_in, a.t(), spec.h_scale)
    del lora_in
    y.addmm_(h, b.t())
    if lora_bias is not None:
        y.add_(lora_bias, alpha=spec.b_scale)
    return y, h


def stash_plan(spec: LoraSpec | None) -> tuple[LoraSpec | None, torch.Tensor | None]:
    """``spec`` without its drop plan, and the plan's tensor, for ``ctx.save_for_backward``.

    Under activation checkpointing only saved tensors are dropped after the forward and
    recomputed in backward; a plan kept on ``ctx`` would stay alive for the whole forward pass,
    one per adapted layer. Recomputation draws the same plan (checkpointing restores the RNG).
    """
    if spec is None or spec.drop is None:
        return spec, None
    return dataclasses.replace(spec, drop=None), spec.drop.tensor


def unstash_plan(spec: LoraSpec | None, tensor: torch.Tensor | None) -> LoraSpec | None:
    """Undo ``stash_plan`` with the saved tensor."""
    if spec is None or tensor is None:
        return spec
    return dataclasses.replace(spec, drop=DropPlan.of(tensor))


def in_compute_dtype(dtype: torch.dtype, *factors: torch.Tensor | None) -> list[torch.Tensor | None]:
    """The LoRA factors in the compute ``dtype`` (the base's): float32 master factors under a
    bfloat16/float16 base become rank-r low-precision copies, so every GEMM runs in one dtype."""
    return [f if f is None or f.dtype == dtype else f.to(dtype) for f in factors]


def as_dtype(grad: torch.Tensor | None, dtype: torch.dtype | None) -> torch.Tensor | None:
    """A factor's gradient in its master dtype (float32 under a low-precision base)."""
    return grad if grad is None or dtype is None or grad.dtype == dtype else grad.to(dtype)


@dataclass
class ProjectionGrads:
    """Gradients of one projection's tensors (None where not requested)."""

    bias: torch.Tensor | None = None
    a: torch.Tensor | None = None
    b: torch.Tensor | None = None
    lora_bias: torch.Tensor | None = None


def project_backward(
    g: torch.Tensor, x: torch.Tensor, weight: torch.Tensor | FrozenLinear, a: torch.Tensor | None, b: torch.Tensor | None,
    h: torch.Tensor | None, spec: LoraSpec | None, needs: tuple[bool, bool, bool, bool],
    grad_x: torch.Tensor | None, need_x: bool, x_is_scratch: bool = False,
) -> tuple[torch.Tensor | None, ProjectionGrads]:
    """Backward of ``project`` for the output gradient ``g`` [N, out].

    ``needs``: whether the base bias, A, B and the LoRA bias want gradients. ``grad_x``: an
    [N, in] accumulator to add this projection's input gradient to (None: start one) when
    ``need_x``. ``x_is_scratch``: ``x`` is not needed afterwards, so the dropout may zero it in
    place instead of copying it. Returns the accumulator and the parameter gradients.
    """
    need_bias, need_a, need_b, need_lb = needs
    grads = ProjectionGrads()
    if need_bias:
        grads.bias = g.sum(0)
    if a is not None and need_lb:
        grads.lora_bias = g.sum(0).mul_(spec.b_scale)
    if a is not None and need_b:
        grads.b = torch.mm(g.t(), h)
    if a is None or not (need_a or need_x):
        if need_x:
            grad_x = base_input_grad(g, weight, grad_x)
        return grad_x, grads
    gh = scaled_mm(g, b, spec.h_scale)  # [N, r]
    drop = spec.drop
    if drop is None:
        if need_a:
            grads.a = torch.mm(gh.t(), x)
        if need_x:
            grad_x = base_input_grad(g, weight, grad_x).addmm_(gh, a)
        return grad_x, grads
    if need_a:
        buffer = drop.apply_(x) if x_is_scratch else drop.apply(x)  # the dropped input, [N, in]
        grads.a = torch.mm(gh.t(), buffer)
    else:
        buffer = x if x_is_scratch else torch.empty_like(x, memory_format=torch.contiguous_format)
    if need_x:
        # the buffer becomes the masked LoRA part of the input gradient; the base GEMM adds onto it
        drop.apply_(torch.mm(gh, a, out=buffer))
        grad_x = base_input_grad(g, weight, buffer if grad_x is None else grad_x.add_(buffer))
    return grad_x, grads


class LoraLinearFunction(torch.autograd.Function):
    """``y = project(x, ...)`` with a memory-lean backward; see the module docstring.

    Inputs: x [N, in] (2-D), weight [out, in] (must not require grad) or a ``FrozenLinear``, bias [out] or None,
    a [r, in], b [out, r], lora_bias [out] or None, spec ``LoraSpec``. Output: y [N, out].
    Everything computes in the dtype of ``x`` and ``weight``; factors in another dtype (float32
    masters under a bfloat16 base) are cast in, and their gradients come back in their own dtype.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, a, b, lora_bias, spec):
        """Compute y and keep x, the factors and h for backward."""
        ctx.factor_dtypes = tuple(None if t is None else t.dtype for t in (a, b, lora_bias))
        a, b, lora_bias = in_compute_dtype(x.dtype, a, b, lora_bias)
        y, h = project(x, weight, bias, a, b, lora_bias, spec)
        kept, ctx.source = saved_weight(weight)  # a compact base saves nothing
        ctx.spec, plan = stash_plan(spec)
        ctx.save_for_backward(x, kept, a, b, h, plan)
        return y

    @staticmethod
    def backward(ctx, grad_y):
        """Gradients for x, bias, a, b and lora_bias (never for the frozen weight)."""
        x, weight, a, b, h, plan = ctx.saved_tensors
        weight = weight if ctx.source is None else ctx.source
        need = ctx.needs_input_grad
        grad_x, grads = project_backward(
            grad_y.contiguous(), x, weight, a, b, h, unstash_plan(ctx.spec, plan), (need[2], need[3], need[4], need[5]),
            None, need[0],
        )
        da, db, dlb = ctx.factor_dtypes
        return grad_x, None, grads.bias, as_dtype(grads.a, da), as_dtype(grads.b, db), as_dtype(grads.lora_bias, dlb), None
