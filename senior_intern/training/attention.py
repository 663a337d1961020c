"""Attention over packed rows: each sample attends only to itself, causally, without per-layer masks.

A packed row holds several samples. ``training_inputs`` describes the rows' samples once per
batch (``Segments``: run lengths per row, cumulative lengths over the flattened batch, the
longest run) and hands the model a zero-memory 4D placeholder mask, so transformers neither
builds its own [B, 1, T, T] mask nor synchronises to detect packing from ``position_ids``.
``enable_segment_attention(model)`` registers ``SEGMENT_ATTENTION`` with transformers'
attention interface and switches an ``sdpa`` model to it. Each layer then takes one of three
paths (``attention_path``), chosen by device and dtype:

- ``varlen`` (CUDA, float16/bfloat16, torch with ``torch.nn.attention.varlen``): one
  flash-attention variable-length call per layer over the flattened batch; it computes
  sum(len^2) / 2 products, not T^2.
- ``masked`` (other GPUs and dtypes: MPS, CUDA float32): one ``scaled_dot_product_attention``
  per layer with the boolean block-diagonal causal mask, built once per batch and shared by
  every layer.
- ``per_sample`` (CPU): one causal product per sample. On the CPU a call costs microseconds, and
  the masked kernel cannot skip masked pairs: on the benchmark's instruction data (about three
  samples per 512-token row) attention fell from about 17% of the step to a few percent.

Every other call (padded batches, evaluation without packing, generation) is plain ``sdpa``.
Trailing padding is one more run: its outputs differ from the masked path's, but no real token
attends to it and its labels are ignored, so loss and gradients are the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from senior_intern.data.loader import to_device

try:  # torch 2.10+: flash-attention's variable-length kernel (CUDA only)
    from torch.nn.attention.varlen import varlen_attn
except ImportError:  # pragma: no cover - older torch
    varlen_attn = None

SEGMENT_ATTENTION = "senior_intern_segments"
"""Name of the segment-aware attention in transformers' ``AttentionInterface``."""

PATHS = ("varlen", "masked", "per_sample")


@dataclass
class Segments:
    """The samples of a packed batch, computed once per batch (``segments_of``).

    ``lengths``: per row, the lengths of its runs of equal segment id (summing to T).
    ``cu_seqlens``: int32 [n_runs + 1] cumulative run lengths over the flattened [B * T] batch,
    on the batch's device. ``max_len``: the longest run. ``shape``: (B, T).
    """

    lengths: tuple[tuple[int, ...], ...]
    cu_seqlens: torch.Tensor
    max_len: int
    shape: tuple[int, int]
    _mask: torch.Tensor | None = field(default=None, repr=False)

    def mask(self, device: torch.device) -> torch.Tensor:
        """Boolean block-diagonal causal mask [B, 1, T, T] (True: attend), built once and reused."""
        if self._mask is None or self._mask.device != device:
            B, T = self.shape
            ids = torch.repeat_interleave(torch.arange(sum(len(r) for r in self.lengths)),
                                          torch.tensor([n for r in self.lengths for n in r])).view(B, T)
            ids = ids.to(device)
            causal = torch.ones(T, T, dtype=torch.bool, device=device).tril_()
            self._mask = ((ids[:, :, None] == ids[:, None, :]) & causal)[:, None]
        return self._mask


def segment_lengths(segment_ids: torch.Tensor) -> tuple[tuple[int, ...], ...]:
    """Per row of ``segment_ids`` [B, T] (CPU), the lengths of its runs of equal ids, in order."""
    return segments_of(segment_ids, "cpu").lengths


def segments_of(segment_ids: torch.Tensor, device: torch.device | str) -> Segments:
    """``Segments`` of a packed batch's ``segment_ids`` [B, T] (CPU): vectorised, one ``tolist``."""
    B, T = segment_ids.shape
    starts = torch.ones(B, T, dtype=torch.bool)
    starts[:, 1:] = segment_ids[:, 1:] != segment_ids[:, :-1]
    flat = starts.view(-1).nonzero().squeeze(1)
    bounds = torch.cat([flat, torch.tensor([B * T])])
    run_lengths = bounds.diff()
    runs_per_row = starts.sum(1).tolist()
    sizes = run_lengths.tolist()
    rows, k = [], 0
    for n in runs_per_row:
        rows.append(tuple(sizes[k:k + n]))
        k += n
    return Segments(tuple(rows), to_device(bounds.to(torch.int32), device), int(max(sizes)) if sizes else 0, (B, T))


def placeholder_mask(batch_size: int, length: int, device: torch.device | str) -> torch.Tensor:
    """A 4D all-True mask [B, 1, T, T] that takes no memory (an expanded 1-element tensor).

    transformers returns a 4D mask as it is, so it builds nothing; ``SEGMENT_ATTENTION``
    ignores it when ``segments`` are given.
    """
    return to_device(torch.ones(1, 1, 1, 1, dtype=torch.bool), device).expand(batch_size, 1, length, length)


def attention_path(device: torch.device, dtype: torch.dtype) -> str:
    """Which of ``PATHS`` packed attention takes for queries on ``device`` in ``dtype``."""
    if device.type == "cuda" and dtype in (torch.float16, torch.bfloat16) and varlen_attn is not None and not torch.version.hip:
        return "varlen"
    if device.type == "cpu":
        return "per_sample"
    return "masked"


def _per_sample(query, key, value, lengths, scaling, gqa) -> torch.Tensor:
    rows = []
    # unbind/split (not indexing): their backward stacks and concatenates the pieces' gradients
    # instead of filling a full-size zero tensor per piece.
    for q_row, k_row, v_row, row_lengths in zip(query.unbind(0), key.unbind(0), value.unbind(0), lengths):
        pieces = [
            F.scaled_dot_product_attention(q[None], k[None], v[None], is_causal=True, scale=scaling, enable_gqa=gqa)
            for q, k, v in zip(q_row.split(row_lengths, 1), k_row.split(row_lengths, 1), v_row.split(row_lengths, 1))
        ]
        rows.append(torch.cat(pieces, dim=2) if len(pieces) > 1 else pieces[0])
    return torch.cat(rows, dim=0)  # [B, Hq, T, D]


def _varlen(query, key, value, seg: Segments, scaling, gqa) -> torch.Tensor:
    B, Hq, T, D = query.shape
    flat = lambda t: t.transpose(1, 2).reshape(B * T, t.shape[1], D)  # noqa: E731  [B*T, H, D]
    out = varlen_attn(flat(query), flat(key), flat(value), seg.cu_seqlens, seg.cu_seqlens, seg.max_len, seg.max_len,
                      scale=scaling, window_size=(-1, 0), enable_gqa=gqa)
    return out.view(B, T, Hq, D)


def _segment_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                       attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                       **kwargs: Any) -> tuple[torch.Tensor, None]:
    """transformers attention function: packed attention when ``segments`` is given, ``sdpa``
    otherwise. query [B, Hq, T, D], key/value [B, Hkv, T, D] -> ([B, T, Hq, D], None)."""
    seg: Segments | None = kwargs.pop("segments", None)
    if seg is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    usable = (not dropout and query.shape[2] == key.shape[2] == seg.shape[1] and kwargs.get("softcap") is None
              and getattr(module, "sliding_window", None) is None and query.shape[0] == seg.shape[0])
    if not usable:  # the exact mask instead of the placeholder
        mask = seg.mask(query.device)
        window = getattr(module, "sliding_window", None)
        if window is not None:
            T = seg.shape[1]
            pos = torch.arange(T, device=query.device)
            mask = mask & ((pos[:, None] - pos[None, :]) < window)
        return sdpa_attention_forward(module, query, key, value, mask, dropout=dropout, scaling=scaling, **kwargs)
    gqa = key.shape[1] != query.shape[1]
    path = attention_path(query.device, query.dtype)
    if path == "varlen":
        return _varlen(query, key, value, seg, scaling, gqa), None
    if path == "masked":
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=seg.mask(query.device), scale=scaling, enable_gqa=gqa)
    else:
        out = _per_sample(query, key, value, seg.lengths, scaling, gqa)
    return out.transpose(1, 2).contiguous(), None


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(SEGMENT_ATTENTION, _segment_attention)
    AttentionMaskInterface.register(SEGMENT_ATTENTION, sdpa_mask)


def enable_segment_attention(model: nn.Module) -> bool:
    """Switch ``model`` from ``sdpa`` to ``SEGMENT_ATTENTION``; True when it did.

    Models on another implementation (eager, flash-attention, a custom one) or that cannot
    change it at run time are left alone, and their packed batches keep the 4D mask.
    """
    config = getattr(model, "config", None)
    setter = getattr(model, "set_attn_implementation", None)
    if config is None or getattr(config, "_attn_implementation", None) != "sdpa" or not callable(setter):
        return False
    _register()
    try:
        setter(SEGMENT_ATTENTION)
    except (ValueError, ImportError, NotImplementedError):
        return False
    return getattr(config, "_attn_implementation", None) == SEGMENT_ATTENTION
