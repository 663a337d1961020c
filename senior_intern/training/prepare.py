"""The changes a training run makes to its model after LoRA is applied, in one visible step.

    lora = LoraModel(model, job.lora)
    prep = prepare_for_training(model, job.training)   # once per loaded model
    forward = CausalLMForward(model, job.training.loss_chunk_size)

``prepare_for_training`` is the only place the engine changes a model besides wrapping it with
LoRA; ``CausalLMForward`` only reads what it did. See its docstring for the forward path each
layer then takes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from senior_intern.config import TrainingConfig
from senior_intern.lora.fused_mlp import fuse_mlps
from senior_intern.training.attention import attention_path, enable_segment_attention

_MARK = "_senior_intern_training_prep"


@dataclass(frozen=True)
class TrainingPrep:
    """What ``prepare_for_training`` did to a model."""

    gradient_checkpointing: bool  # decoder layers recompute their activations in backward
    fused_mlps: tuple[str, ...]  # names of the MLP modules routed through ``SwiGluFunction``
    segments: bool  # attention switched to ``attention.SEGMENT_ATTENTION`` for packed rows

    def describe(self, device: torch.device | None = None, dtype: torch.dtype | None = None) -> str:
        """One line for the log; with ``device`` and ``dtype``, the packed-attention path they take."""
        if not self.segments:
            packed = "the model's attention with a 4D mask"
        elif device is not None and dtype is not None:
            packed = f"segment attention ({attention_path(torch.device(device), dtype).replace('_', '-')})"
        else:
            packed = "segment attention"
        return (f"Forward path: {len(self.fused_mlps)} fused MLP(s); packed rows through {packed}; "
                f"gradient checkpointing {'on' if self.gradient_checkpointing else 'off'}")


def training_prep(model: nn.Module) -> TrainingPrep | None:
    """What ``prepare_for_training`` did to ``model``; None when it was not prepared."""
    return vars(model).get(_MARK)


def prepare_for_training(model: nn.Module, cfg: TrainingConfig, *, fuse_mlp: bool = True,
                         segment_attention: bool = True) -> TrainingPrep:
    """Change a (LoRA-wrapped) Hugging Face causal LM for training, in this order, once:

    1. gradient checkpointing when ``cfg.gradient_checkpointing`` (non-reentrant;
       ``activation_checkpointing_enable`` where the model has it, else
       ``gradient_checkpointing_enable``; ValueError naming the model's class when it has neither);
    2. gated SiLU MLPs routed through one autograd function (``lora.fused_mlp.fuse_mlps``; only
       modules whose own forward is checked to compute ``down(silu(gate(x)) * up(x))``);
       ``fuse_mlp=False`` leaves them alone;
    3. an ``sdpa`` model switched to segment attention (``attention.enable_segment_attention``);
       ``segment_attention=False`` leaves it on its implementation.

    The one forward path of each decoder layer afterwards:

    - attention: with ``segments`` (an ``sdpa`` model), a packed row that holds several samples
      attends per sample through the path ``attention.attention_path`` picks by device and dtype:
      one varlen flash call (CUDA float16/bfloat16), one SDPA call with the block mask shared by
      all layers (other GPUs, CUDA float32) or one causal product per sample (CPU); a layer with
      a sliding window, soft-capping or dropout takes SDPA with the exact mask instead. Packed
      rows of one sample without padding get no mask (plain causal SDPA) and padded batches
      the model's own masked SDPA. Without ``segments`` (eager, flash-attention or a custom
      implementation) packed rows take the model's own attention with the 4D block mask
      ``forward.training_inputs`` builds.
    - MLP: a module listed in ``fused_mlps`` runs ``SwiGluFunction``; a call it cannot take (a
      merged or disabled adapter, mixed dtypes) and every other MLP run the module's own forward.
    - with gradient checkpointing each decoder layer keeps only its input and runs the same path
      again in backward.

    Preparing a model twice raises RuntimeError: load a fresh model for another run.
    """
    done = training_prep(model)
    if done is not None:
        raise RuntimeError(f"{type(model).__name__} was already prepared for training ({done.describe()}); "
                           "prepare each loaded model once")
    checkpointing = bool(cfg.gradient_checkpointing)
    if checkpointing:
        kwargs = {"use_reentrant": False}
        if hasattr(model, "activation_checkpointing_enable"):
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        elif hasattr(model, "gradient_checkpointing_enable"):
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        else:
            raise ValueError(f"{type(model).__name__} does not support gradient checkpointing; turn gradient_checkpointing off")
    fused = tuple(fuse_mlps(model)) if fuse_mlp else ()
    segments = enable_segment_attention(model) if segment_attention else False
    prep = TrainingPrep(gradient_checkpointing=checkpointing, fused_mlps=fused, segments=segments)
    vars(model)[_MARK] = prep
    return prep
