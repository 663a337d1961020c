"""One micro-batch through the model to a summed loss, without full-vocabulary logits.

For Hugging Face causal LMs the decoder gives hidden states [B, T, H]; the loss projects only
the trained positions through the LM head, in chunks (``chunked_causal_lm_loss``). Models
without a separable decoder/head fall back to the plain logits path.

``CausalLMForward`` changes nothing on the model: the fused MLPs (``lora.fused_mlp``) and
segment attention are switched on once before, by ``prepare.prepare_for_training``, whose
docstring gives each layer's forward path. ``training_inputs`` gives the model the cheapest
attention mask that means the same thing: none at all (pure causal attention, the fast kernel
path) for packed rows that each hold one sample without padding, and packed attention
(``attention``: one varlen call per layer on CUDA) for rows that hold several.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from senior_intern.data import Batch, model_inputs
from senior_intern.data.loader import to_device
from senior_intern.training.attention import SEGMENT_ATTENTION, placeholder_mask, segments_of
from senior_intern.training.loss import ChunkedLossOutput, causal_lm_loss, chunked_causal_lm_loss


def training_inputs(batch: Batch, dtype: torch.dtype = torch.float32,
                    device: torch.device | str = "cpu", segments: bool = False) -> dict[str, Any]:
    """Model keyword arguments for ``batch`` on ``device`` (``model_inputs``), without a mask where none is needed.

    A packed batch whose every row is a single sample filling the whole row (segment 0
    everywhere, no padding) attends exactly causally, so it gets no ``attention_mask``: the
    model then uses causal attention instead of a [B, 1, T, T] additive mask. With ``segments``
    (the model runs ``attention.SEGMENT_ATTENTION``) other packed batches get their samples
    (``segments``: ``attention.segments_of``, computed once per batch) and a zero-memory
    placeholder mask, so transformers builds no mask of its own. Other batches get
    ``model_inputs(batch.to(device), dtype)``. ``batch`` must still be on the CPU.
    """
    ids = batch.segment_ids
    several = ids is not None and bool(ids.any())
    if ids is not None and (segments or not several):
        inputs: dict[str, Any] = {"input_ids": to_device(batch.input_ids, device),
                                  "position_ids": to_device(batch.position_ids, device)}
        if several:
            inputs["segments"] = segments_of(ids, device)
            inputs["attention_mask"] = placeholder_mask(ids.shape[0], ids.shape[1], device)
        return inputs
    return model_inputs(batch.to(device), dtype)


class _SoftCappedHead(nn.Module):
    """LM head followed by tanh soft-capping (Gemma-style ``final_logit_softcapping``)."""

    def __init__(self, head: nn.Module, cap: float) -> None:
        super().__init__()
        self.head = head
        self.cap = cap

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """[n, H] -> capped logits [n, V]."""
        return torch.tanh(self.head(hidden) / self.cap) * self.cap


class CausalLMForward:
    """Runs a (LoRA-wrapped) Hugging Face causal LM and returns a ``ChunkedLossOutput`` for a batch.

    Reads the model, never changes it (``prepare.prepare_for_training`` does, once, before).
    """

    def __init__(self, model: nn.Module, chunk_size: int = 1024) -> None:
        self.model = model
        self.chunk_size = chunk_size
        get_decoder = getattr(model, "get_decoder", None)
        get_head = getattr(model, "get_output_embeddings", None)
        self.decoder = get_decoder() if callable(get_decoder) else None
        self.head = get_head() if callable(get_head) else None
        cap = getattr(getattr(model, "config", None), "final_logit_softcapping", None)
        if self.head is not None and cap:
            self.head = _SoftCappedHead(self.head, float(cap))

    @property
    def segments(self) -> bool:
        """True when the model runs segment attention (``attention.SEGMENT_ATTENTION``): what ``training_inputs`` needs to know."""
        return getattr(getattr(self.model, "config", None), "_attn_implementation", None) == SEGMENT_ATTENTION

    @property
    def fast_path(self) -> bool:
        """True when the decoder and head are separate, so logits are never materialised."""
        return self.decoder is not None and self.head is not None and self.decoder is not self.model

    def __call__(self, inputs: dict[str, Any], labels: torch.Tensor) -> ChunkedLossOutput:
        """``inputs``: model kwargs (input_ids [B,T], attention_mask, position_ids); labels [B,T]."""
        if self.fast_path:
            hidden = self.decoder(**inputs, use_cache=False).last_hidden_state  # [B, T, H]
            return chunked_causal_lm_loss(hidden, self.head, labels, chunk_size=self.chunk_size)
        logits = self.model(**inputs, use_cache=False).logits  # [B, T, V]
        labels = labels.to(logits.device)
        loss_sum = causal_lm_loss(logits, labels, reduction="sum")
        shift_labels = labels[:, 1:]
        valid = shift_labels != -100
        correct = ((logits[:, :-1].argmax(-1) == shift_labels) & valid).sum()
        return ChunkedLossOutput(loss_sum, int(valid.sum()), correct)
