"""Gradient clipping, health checks and token-normalised accumulation (spec v0.8.3d).

Accumulation: an optimizer step over k micro-batches must produce the gradient of the mean
token loss of *all* its tokens, i.e. ``sum_i loss_sum_i / sum_i n_valid_i``. Dividing each
micro-batch's loss by its own token count and then by k (a mean of means) weights the tokens of
short micro-batches more; the two agree only when every micro-batch has the same number of
valid tokens. So the engine counts the valid tokens of the whole step first
(``accumulation_normaliser``) and backpropagates ``loss_sum_i / total`` for each micro-batch
(``GradientAccumulator.scale``).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable, Sequence

import torch
from torch import nn

from senior_intern.training.loss import IGNORE_INDEX, count_valid_tokens


def _with_grad(params: Iterable[nn.Parameter]) -> tuple[list[nn.Parameter], list[torch.Tensor]]:
    params = list(params)
    return params, [p.grad for p in params if p.grad is not None]


def _by_device(grads: Sequence[torch.Tensor]) -> dict[torch.device, list[int]]:
    groups: dict[torch.device, list[int]] = defaultdict(list)
    for i, g in enumerate(grads):
        groups[g.device].append(i)
    return groups


def _per_tensor_norms(grads: Sequence[torch.Tensor], ord: float) -> torch.Tensor:
    """Norm of each gradient ([len(grads)] float32 on the first one's device), no sync.

    ``ord=inf`` gives max |g| (NaN where a gradient holds a NaN).
    """
    out = torch.empty(len(grads), dtype=torch.float32, device=grads[0].device)
    for indices in _by_device(grads).values():
        norms = torch._foreach_norm([grads[i] for i in indices], ord=ord)
        out[indices] = torch.stack([n.float() for n in norms]).to(out.device)
    return out


def clip_grad_norm(params: Iterable[nn.Parameter], max_norm: float) -> float:
    """Global L2 norm of the gradients *before* clipping; scales them down to ``max_norm``.

    ``max_norm <= 0`` disables clipping (the norm is still returned). A non-finite norm leaves
    the gradients untouched so the caller can see it and skip the optimizer step. One device
    synchronisation (the returned float). Parameters without a gradient are ignored; with none
    at all the norm is 0.
    """
    _, grads = _with_grad(params)
    if not grads:
        return 0.0
    norm = float(torch.linalg.vector_norm(_per_tensor_norms(grads, 2.0)))  # device sync
    if max_norm > 0 and math.isfinite(norm) and norm > max_norm:
        scale = max_norm / (norm + 1e-6)
        for indices in _by_device(grads).values():
            torch._foreach_mul_([grads[i] for i in indices], scale)
    return norm


@dataclass(frozen=True)
class GradientHealth:
    """Result of ``check_gradient_health`` (spec ``GradientHealthCheck``)."""

    is_healthy: bool  # no NaN, no Inf and max_abs below the threshold
    has_nan: bool
    has_inf: bool
    max_abs: float  # largest |g| over parameters whose gradient is finite
    total_parameters: int  # parameter tensors passed in
    parameters_with_grad: int  # of which have a gradient


def check_gradient_health(
    params: Iterable[nn.Parameter], max_abs_threshold: float = 1e6
) -> GradientHealth:
    """Look for NaN, Inf and huge values in the gradients of ``params``.

    Vectorised: one device synchronisation for a healthy set of gradients (a second one only
    when a NaN turns up, to tell whether the same tensors also hold an Inf).
    """
    params, grads = _with_grad(params)
    if not grads:
        return GradientHealth(True, False, False, 0.0, len(params), 0)
    max_abs = _per_tensor_norms(grads, math.inf)  # [n]
    finite = max_abs.isfinite()
    stats = torch.stack([
        max_abs.isnan().any().double(),
        max_abs.isinf().any().double(),
        torch.where(finite, max_abs, 0.0).max().double(),
    ])
    has_nan, has_inf, largest = stats.tolist()  # device sync
    has_nan, has_inf = bool(has_nan), bool(has_inf)
    if has_nan and not has_inf:  # a NaN hides an Inf in the same tensor from max |g|
        suspects = [g for g, bad in zip(grads, max_abs.isnan().tolist()) if bad]
        has_inf = any(bool(g.isinf().any()) for g in suspects)
    healthy = not has_nan and not has_inf and largest < max_abs_threshold
    return GradientHealth(healthy, has_nan, has_inf, largest, len(params), len(grads))


def zero_grad(params: Iterable[nn.Parameter]) -> None:
    """Drop the gradients of ``params`` (set to ``None``: no memory, no zero-fill kernel)."""
    for p in params:
        p.grad = None


def accumulation_normaliser(
    label_batches: Iterable[torch.Tensor], ignore_index: int = IGNORE_INDEX
) -> int:
    """Valid targets (after the causal shift) in all micro-batches of one optimizer step.

    ``label_batches``: the labels [B, T] of each micro-batch; keep them on the CPU to avoid
    device synchronisations.
    """
    return sum(count_valid_tokens(labels, ignore_index) for labels in label_batches)


class GradientAccumulator:
    """Bookkeeping of one optimizer step made of ``accumulation_steps`` micro-batches.

    Per step: ``begin_step(total_valid_tokens)``, then for each micro-batch
    ``accumulator.scale(loss_sum).backward()`` and ``if accumulator.accumulate(): <clip, step,
    zero_grad>``. ``should_step`` tells before ``accumulate()`` whether the current micro-batch
    is the last of its step (spec ``GradientManager.ShouldStep``).
    """

    def __init__(self, accumulation_steps: int) -> None:
        if accumulation_steps < 1:
            raise ValueError(
                f"training.gradient_accumulation_steps must be at least 1; got {accumulation_steps}"
            )
        self.accumulation_steps = accumulation_steps
        self._current = 0
        self._total_tokens = 0

    @property
    def current_step(self) -> int:
        """0-based index of the current micro-batch within its optimizer step."""
        return self._current

    @property
    def should_step(self) -> bool:
        """True when the current micro-batch completes the optimizer step."""
        return self._current >= self.accumulation_steps - 1

    @property
    def total_tokens(self) -> int:
        """Valid targets of the whole current optimizer step (the loss normaliser)."""
        return self._total_tokens

    def begin_step(self, total_valid_tokens: int) -> None:
        """Start an optimizer step whose micro-batches hold ``total_valid_tokens`` targets in all."""
        if total_valid_tokens < 0:
            raise ValueError(f"total_valid_tokens must not be negative; got {total_valid_tokens}")
        self._total_tokens = total_valid_tokens

    def scale(self, loss_sum: torch.Tensor) -> torch.Tensor:
        """Micro-batch loss to backpropagate: its token-loss sum / the step's valid tokens.

        A step without valid tokens yields ``loss_sum * 0`` (zero gradients, no division by 0).
        """
        if self._total_tokens == 0:
            return loss_sum * 0.0
        return loss_sum / self._total_tokens

    def accumulate(self) -> bool:
        """Count a finished micro-batch; True when the optimizer should step now."""
        self._current += 1
        if self._current >= self.accumulation_steps:
            self._current = 0
            return True
        return False

    def reset(self) -> None:
        """Forget a partly accumulated step (e.g. after skipping a non-finite step)."""
        self._current = 0
        self._total_tokens = 0
