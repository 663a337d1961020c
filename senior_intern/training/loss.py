"""Causal language-model loss: the plain path and a chunked path without logits.

Causal LM shift (spec v0.8.3d): the logits at position ``t`` predict the label at ``t + 1``, so
position ``T - 1`` predicts nothing and label ``0`` is never a target. Labels equal to
``ignore_index`` (-100: prompt and padding tokens) contribute nothing.

``chunked_causal_lm_loss`` is the path the engine uses. It selects the hidden states whose next
label is valid first (prompt and pad positions never reach the head), then projects them in
chunks of ``chunk_size`` rows, so at most ``[chunk_size, V]`` float32 logits exist at a time:

- for an ``nn.Linear`` head (or a compact ``FrozenLinear`` one), ``_FusedLinearCrossEntropy``
  computes the loss *and* the gradients of each chunk in the forward pass and keeps only the gradients (``[n, H]``, plus ``[V, H]``
  when the head trains); backward scales them by the incoming gradient;
- for any other head module (a LoRA-wrapped head, a soft-capped head), each chunk runs under
  activation checkpointing, so its logits are recomputed in backward instead of stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from senior_intern.data.loader import to_device
from senior_intern.models.quantized import FrozenLinear

IGNORE_INDEX = -100
_REDUCTIONS = ("mean", "sum", "none")


def _check_labels(labels: torch.Tensor, name: str = "labels") -> None:
    if labels.dim() != 2:
        raise ValueError(f"{name} must be [batch, seq_len]; got shape {tuple(labels.shape)}")


def _check_inputs(values: torch.Tensor, labels: torch.Tensor, what: str, last: str) -> None:
    """``labels`` [B, T] and ``values`` [B, T, ``last``] (named ``what`` in the error)."""
    _check_labels(labels)
    if values.dim() != 3 or values.shape[:2] != labels.shape:
        raise ValueError(f"{what} must be [batch, seq_len, {last}] matching labels {tuple(labels.shape)}; "
                         f"got {tuple(values.shape)}")


def causal_lm_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    ignore_index: int = IGNORE_INDEX,
    reduction: str = "mean",
) -> torch.Tensor:
    """Next-token cross-entropy of ``logits`` [B, T, V] against ``labels`` [B, T].

    ``reduction``: ``"mean"`` over the valid targets (0, not NaN, when there are none),
    ``"sum"`` over them, or ``"none"`` for the per-position losses [B, T - 1] (0 where ignored).
    Logits are upcast to float32 before the softmax.
    """
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {', '.join(_REDUCTIONS)}; got {reduction!r}")
    _check_inputs(logits, labels, "logits", "vocab")
    shift_logits = logits[:, :-1].float()  # [B, T-1, V]
    shift_labels = labels[:, 1:].to(logits.device)  # [B, T-1]
    losses = F.cross_entropy(
        shift_logits.reshape(-1, shift_logits.shape[-1]),
        shift_labels.reshape(-1),
        ignore_index=ignore_index,
        reduction="none",
    ).view(shift_labels.shape)
    if reduction == "none":
        return losses
    total = losses.sum()
    if reduction == "sum":
        return total
    return total / (shift_labels != ignore_index).sum().clamp(min=1)


@dataclass
class ChunkedLossOutput:
    """Summed token loss of a micro-batch; divide by the step's valid-token count yourself."""

    loss_sum: torch.Tensor  # float32 scalar, differentiable
    n_valid: int  # targets that entered the loss
    n_correct: torch.Tensor  # int64 scalar on the hidden states' device (argmax == target)


def _select_targets(
    labels: torch.Tensor, ignore_index: int, vocab_size: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat positions ``b * T + t`` whose next label is valid, and those labels (both [n])."""
    valid = labels[:, 1:] != ignore_index  # [B, T-1]
    valid = F.pad(valid, (0, 1), value=False)  # [B, T]: position T-1 predicts nothing
    positions = valid.reshape(-1).nonzero().squeeze(1)  # syncs once if labels are on a device
    targets = labels.reshape(-1)[positions + 1]
    if labels.device.type == "cpu" and vocab_size is not None and targets.numel():
        low, high = int(targets.min()), int(targets.max())
        if low < 0 or high >= vocab_size:
            bad = low if low < 0 else high
            raise ValueError(
                f"label id {bad} is outside the vocabulary (0..{vocab_size - 1}) and is not "
                f"ignore_index {ignore_index}; check that the dataset was tokenized with this model's tokenizer"
            )
    return positions, targets


class _FusedLinearCrossEntropy(torch.autograd.Function):
    """Sum of cross-entropies of ``h @ W.T + b`` against targets, gradients computed up front.

    Per chunk of rows: logits Z = h W^T + b in float32, m = max Z, E = exp(Z - m), s = sum E,
    loss = m + log s - Z[target]. With softmax P = E / s the gradients are
    dh = P W - W[target] and dW = P^T h - onehot^T h, computed as ``(E @ W) / s`` and
    ``E^T @ (h / s)`` so the [rows, V] matrix is never normalised or one-hot edited.

    ``weight`` may be a compact head (``FrozenLinear``, never trained): its products run a slice
    of vocabulary rows at a time and W[target] dequantises only the target rows.
    """

    @staticmethod
    def forward(ctx, h, weight, bias, targets, chunk_size, need_h, need_w, need_b):
        n, H = h.shape
        compact = isinstance(weight, FrozenLinear)
        V = weight.out_features if compact else weight.shape[0]
        dtype, device, f32 = weight.compute_dtype if compact else weight.dtype, h.device, torch.float32
        ctx.dtypes = (h.dtype, dtype)
        h = h.to(dtype)
        low = dtype != f32
        rows_max = max(1, min(chunk_size, n))
        logits = torch.empty(rows_max, V, device=device, dtype=f32)
        low_buf = torch.empty(rows_max, V, device=device, dtype=dtype) if low else None
        alloc = torch.empty if n else torch.zeros  # chunks overwrite, except when there are none
        grad_h = torch.empty(n, H, device=device, dtype=dtype) if need_h else None
        grad_w = alloc(V, H, device=device, dtype=f32) if need_w else None
        grad_w_low = torch.empty(V, H, device=device, dtype=dtype) if need_w and low else None
        grad_b = alloc(V, device=device, dtype=f32) if need_b else None
        bias32 = bias.float() if bias is not None else None
        loss_sum = torch.zeros((), device=device, dtype=f32)
        n_correct = torch.zeros((), device=device, dtype=torch.int64)

        for start in range(0, n, rows_max):
            hc, tc = h[start:start + rows_max], targets[start:start + rows_max]
            rows, first = hc.shape[0], start == 0
            z = logits[:rows]
            buf = low_buf[:rows] if low else z
            if compact:
                weight.mm_t(hc, out=buf)
            else:
                torch.mm(hc, weight.t(), out=buf)
            if low:
                z.copy_(buf)
            if bias32 is not None:
                z.add_(bias32)
            z_max, argmax = z.max(dim=1)
            z_target = z.gather(1, tc[:, None]).squeeze(1)
            e = z.sub_(z_max[:, None]).exp_()  # in place: E = exp(Z - m), values in (0, 1]
            s = e.sum(dim=1)
            loss_sum += (z_max + s.log() - z_target).sum()
            n_correct += (argmax == tc).sum()
            if not (need_h or need_w or need_b):
                continue
            inv_s = s.reciprocal().to(dtype)[:, None]  # [rows, 1]
            e = low_buf[:rows].copy_(e) if low else e
            if need_h:
                out = grad_h[start:start + rows]
                gh = weight.mm(e, out=out) if compact else torch.mm(e, weight, out=out)
                gh.mul_(inv_s).sub_(weight.rows_at(tc, dtype) if compact else weight.index_select(0, tc))
            if need_w:
                scaled = hc * inv_s
                if not low:
                    if first:
                        torch.mm(e.t(), scaled, out=grad_w)
                    else:
                        grad_w.addmm_(e.t(), scaled)
                else:
                    chunk_w = torch.mm(e.t(), scaled, out=grad_w_low)
                    if first:
                        grad_w.copy_(chunk_w)
                    else:
                        grad_w.add_(chunk_w)
                grad_w.index_add_(0, tc, hc.to(f32), alpha=-1)
            if need_b:
                chunk_b = torch.mv(e.t(), inv_s.squeeze(1))
                if first:
                    grad_b.copy_(chunk_b)
                else:
                    grad_b.add_(chunk_b)
                grad_b.index_add_(0, tc, torch.ones(rows, device=device, dtype=f32), alpha=-1)

        ctx.save_for_backward(grad_h, grad_w, grad_b)
        ctx.mark_non_differentiable(n_correct)
        return loss_sum, n_correct

    @staticmethod
    def backward(ctx, grad_loss, _grad_correct):
        grad_h, grad_w, grad_b = ctx.saved_tensors
        h_dtype, w_dtype = ctx.dtypes
        out_h = (grad_h * grad_loss.to(grad_h.dtype)).to(h_dtype) if grad_h is not None else None
        out_w = (grad_w * grad_loss).to(w_dtype) if grad_w is not None else None
        out_b = (grad_b * grad_loss).to(w_dtype) if grad_b is not None else None
        return out_h, out_w, out_b, None, None, None, None, None


def _chunk_cross_entropy(
    head: Callable[[torch.Tensor], torch.Tensor], hidden: torch.Tensor, targets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed cross-entropy and correct count of ``head(hidden)`` ([n, V], upcast to float32)."""
    logits = head(hidden).float()
    loss = F.cross_entropy(logits, targets, reduction="sum")
    correct = (logits.argmax(dim=1) == targets).sum()
    return loss, correct


def _generic_head_loss(
    hidden: torch.Tensor, head: nn.Module, targets: torch.Tensor, chunk_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Chunked loss through any head module; logits are recomputed in backward, never stored."""
    grad = torch.is_grad_enabled()
    loss_sum = torch.zeros((), device=hidden.device, dtype=torch.float32)
    n_correct = torch.zeros((), device=hidden.device, dtype=torch.int64)
    for start in range(0, max(hidden.shape[0], 1), chunk_size):  # no rows: one empty chunk,
        # so the head's parameters still get (zero) gradients
        hc, tc = hidden[start:start + chunk_size], targets[start:start + chunk_size]
        if grad:
            loss, correct = checkpoint(_chunk_cross_entropy, head, hc, tc, use_reentrant=False)
        else:
            loss, correct = _chunk_cross_entropy(head, hc, tc)
        loss_sum = loss_sum + loss
        n_correct += correct
    return loss_sum, n_correct


def chunked_causal_lm_loss(
    hidden: torch.Tensor,
    head: nn.Module,
    labels: torch.Tensor,
    *,
    chunk_size: int = 1024,
    ignore_index: int = IGNORE_INDEX,
) -> ChunkedLossOutput:
    """Summed next-token cross-entropy of ``head(hidden)`` without full-vocabulary logits.

    ``hidden`` [B, T, H] are the final hidden states (after the last norm); ``head`` maps
    [n, H] -> [n, V]: an ``nn.Linear`` (weight [V, H], optional bias; exactly ``nn.Linear``,
    not a subclass) or a compact ``FrozenLinear`` takes the fused path, any other module the
    checkpointed path. ``labels`` [B, T] may live on the CPU, which avoids a device synchronisation: the only one is the
    selection of valid positions when labels live on the device. Returns the float32 loss sum
    (0 with zero gradients when every label is ignored), the number of targets and the number
    the argmax predicted correctly. Gradients come back in the dtype of ``hidden`` and the head.
    """
    if chunk_size < 1:
        raise ValueError(f"loss_chunk_size must be at least 1; got {chunk_size}")
    _check_inputs(hidden, labels, "hidden states", "hidden")
    compact = isinstance(head, FrozenLinear)
    fused = compact or type(head) is nn.Linear
    positions, targets = _select_targets(labels, ignore_index, head.out_features if fused else None)
    n_valid = positions.numel()
    positions = to_device(positions, hidden.device)  # temporaries: never an async copy on MPS
    targets = to_device(targets, hidden.device)
    selected = hidden.reshape(-1, hidden.shape[-1]).index_select(0, positions)  # [n, H]
    if fused:
        grad = torch.is_grad_enabled()
        bias = head.bias
        loss_sum, n_correct = _FusedLinearCrossEntropy.apply(
            selected, head if compact else head.weight, bias, targets, chunk_size,
            grad and selected.requires_grad,
            grad and not compact and head.weight.requires_grad,
            grad and bias is not None and bias.requires_grad,
        )
    else:
        loss_sum, n_correct = _generic_head_loss(selected, head, targets, chunk_size)
    return ChunkedLossOutput(loss_sum=loss_sum, n_valid=n_valid, n_correct=n_correct)
