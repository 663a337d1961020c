"""Gradient clipping by the global L2 norm, vectorised (one device synchronisation per step).

The session (``TrainingSession._optimizer_step``) calls ``clip_grad_norm`` once per optimizer
step, after unscaling float16 gradients, and skips the step when the returned norm is not
finite. Accumulation needs no helper here: the session divides each micro-batch's loss sum by
the valid tokens of the whole step, so k micro-batches give the gradient of one big batch.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Iterable, Sequence

import torch
from torch import nn


def _by_device(grads: Sequence[torch.Tensor]) -> dict[torch.device, list[int]]:
    groups: dict[torch.device, list[int]] = defaultdict(list)
    for i, g in enumerate(grads):
        groups[g.device].append(i)
    return groups


def _per_tensor_norms(grads: Sequence[torch.Tensor], ord: float) -> torch.Tensor:
    """Norm of each gradient ([len(grads)] float32 on the first one's device), no sync."""
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
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return 0.0
    norm = float(torch.linalg.vector_norm(_per_tensor_norms(grads, 2.0)))  # device sync
    if max_norm > 0 and math.isfinite(norm) and norm > max_norm:
        scale = max_norm / (norm + 1e-6)
        for indices in _by_device(grads).values():
            torch._foreach_mul_([grads[i] for i in indices], scale)
    return norm
