"""Attention over packed rows, one causal block per sample instead of a [B, 1, T, T] mask.

A packed row holds several samples; each may attend only to itself, causally. Given as an
additive block-diagonal mask, PyTorch's attention kernels compute every query-key pair of the
row (T^2) and cannot skip the masked ones; as separate causal products per sample they compute
sum(len^2) / 2. On the benchmark's instruction data (about three samples per 512-token row) the
packed step's attention fell from about 17% of the step to a few percent.

``enable_segment_attention(model)`` registers ``SEGMENT_ATTENTION`` with transformers'
attention interface (masks made as for ``sdpa``) and switches a model that uses ``sdpa`` to it.
Calls that pass ``segment_lengths`` (``segment_lengths(segment_ids)``: per row, the lengths of
its runs of equal segment id, summing to T) run one causal ``scaled_dot_product_attention`` per
run; every other call (padded batches, evaluation without packing, generation) is plain
``sdpa``. Trailing padding is one more run: its outputs differ from the masked path's, but no
real token attends to it and its labels are ignored, so loss and gradients are the same.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers.integrations.sdpa_attention import sdpa_attention_forward

SEGMENT_ATTENTION = "senior_intern_segments"
"""Name of the segment-aware attention in transformers' ``AttentionInterface``."""


def segment_lengths(segment_ids: torch.Tensor) -> tuple[tuple[int, ...], ...]:
    """Per row of ``segment_ids`` [B, T] (CPU), the lengths of its runs of equal ids, in order."""
    ids = segment_ids.tolist()
    rows = []
    for row in ids:
        lengths, start = [], 0
        for t in range(1, len(row) + 1):
            if t == len(row) or row[t] != row[start]:
                lengths.append(t - start)
                start = t
        rows.append(tuple(lengths))
    return tuple(rows)


def _segment_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                       attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                       **kwargs: Any) -> tuple[torch.Tensor, None]:
    """transformers attention function: per-segment causal attention when ``segment_lengths`` is
    given, ``sdpa`` otherwise. query [B, Hq, T, D], key/value [B, Hkv, T, D] -> ([B, T, Hq, D], None)."""
    lengths = kwargs.pop("segment_lengths", None)
    usable = (
        lengths is not None and not dropout and query.shape[2] == key.shape[2]
        and kwargs.get("softcap") is None and getattr(module, "sliding_window", None) is None
        and len(lengths) == query.shape[0]
    )
    if not usable:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    gqa = key.shape[1] != query.shape[1]
    rows = []
    # unbind/split (not indexing): their backward stacks and concatenates the pieces' gradients
    # instead of filling a full-size zero tensor per piece.
    for q_row, k_row, v_row, row_lengths in zip(query.unbind(0), key.unbind(0), value.unbind(0), lengths):
        pieces = [
            F.scaled_dot_product_attention(q[None], k[None], v[None], is_causal=True, scale=scaling, enable_gqa=gqa)
            for q, k, v in zip(q_row.split(row_lengths, 1), k_row.split(row_lengths, 1), v_row.split(row_lengths, 1))
        ]
        rows.append(torch.cat(pieces, dim=2) if len(pieces) > 1 else pieces[0])
    out = torch.cat(rows, dim=0)  # [B, Hq, T, D]
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
