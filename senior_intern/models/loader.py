"""``load_base_model``: a frozen base model and its tokenizer, ready to be wrapped with LoRA."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from senior_intern.models import cache
from senior_intern.models.info import ModelInfo, ModelLoadError, one_line, require_all_weights
from senior_intern.models.inspection import hf_layout, metadata, read_safetensors_header, resolve_model_path

if TYPE_CHECKING:
    import torch

DTYPE_NAMES = ("float32", "bfloat16", "float16")


@dataclass
class LoadedModel:
    """A base model in eval mode with every parameter frozen, on its device, and its tokenizer."""

    model: Any
    """The ``transformers`` causal LM (``PreTrainedModel``); ``model(input_ids)`` with ids of shape
    (batch, seq) returns logits of shape (batch, seq, vocab)."""
    tokenizer: Any
    """The model's ``transformers`` tokenizer."""
    info: ModelInfo
    """What was loaded; ``dtype`` and ``load_seconds`` describe this load."""


def load_base_model(
    path: str | os.PathLike[str],
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype | None = None,
) -> LoadedModel:
    """Load a Hugging Face model folder or a ``.gguf`` file for LoRA training.

    ``dtype`` None or ``"auto"`` means float32 on the CPU and bfloat16 (float16 where the GPU
    lacks bfloat16) elsewhere; otherwise a ``torch.dtype`` or one of ``DTYPE_NAMES``. A GGUF file
    is converted into the model cache on its first load (dequantised to float) and loaded from
    there afterwards. Raises ``ModelLoadError`` (a ``ValueError``) naming the path and the problem.
    """
    started = time.perf_counter()
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    source = resolve_model_path(path)
    info = metadata(source)
    if info.source_format == "gguf":
        model, tokenizer = _load_gguf(source, info.content_hash, torch_dtype)
    else:
        model, tokenizer = _load_folder(source, source, torch_dtype)
    model.to(torch_device)
    model.eval()
    model.requires_grad_(False)
    info = replace(
        info,
        dtype=str(model.dtype).removeprefix("torch."),
        load_seconds=time.perf_counter() - started,
    )
    return LoadedModel(model, tokenizer, info)


def resolve_device(device: str | torch.device) -> torch.device:
    """``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"`` or a ``torch.device``, checked to exist here."""
    import torch

    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"unknown device {device!r}; use cpu, cuda, cuda:N or mps") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but CUDA is not available on this machine; use cpu")
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {device!r} asked for, but MPS is not available on this machine; use cpu")
    return resolved


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """The floating dtype to load in: see ``load_base_model`` for what None and ``"auto"`` mean."""
    import torch

    if isinstance(dtype, torch.dtype):
        if not dtype.is_floating_point:
            raise ValueError(f"dtype {dtype} is not a floating-point type; use one of {', '.join(DTYPE_NAMES)}")
        return dtype
    name = "auto" if dtype is None else str(dtype).strip().lower().removeprefix("torch.")
    if name == "auto":
        if device.type == "cpu":
            return torch.float32
        # Native bfloat16 only: a T4 "supports" it through emulation, several times slower than
        # float16, and the trainer's own choice (hardware.detect) says float16 there too.
        if device.type == "cuda" and not torch.cuda.is_bf16_supported(including_emulation=False):
            return torch.float16
        return torch.bfloat16
    if name not in DTYPE_NAMES:
        raise ValueError(f"unknown dtype {dtype!r}; use auto, {', '.join(DTYPE_NAMES)}")
    return getattr(torch, name)


def _load_gguf(source: Path, content_hash: str, dtype: torch.dtype) -> tuple[Any, Any]:
    """Load a GGUF file from its cached conversion, converting it first when needed."""
    folder = cache.cached_conversion(content_hash)
    if folder is not None:
        try:
            for file in hf_layout(folder).weight_files:
                read_safetensors_header(file)
            return _load_folder(folder, source, dtype)
        except ModelLoadError:  # a damaged cache entry is rebuilt from the source
            cache.remove_entry(content_hash)
    folder = cache.convert_gguf(source, content_hash)
    return _load_folder(folder, source, dtype)


def _load_folder(folder: Path, shown_as: Path, dtype: torch.dtype) -> tuple[Any, Any]:
    """Model and tokenizer of a checked Hugging Face folder; errors name ``shown_as``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        model, loading_info = AutoModelForCausalLM.from_pretrained(
            folder, dtype=dtype, local_files_only=True, output_loading_info=True
        )
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except MemoryError:
        raise
    except Exception as exc:  # transformers, safetensors and tokenizers raise many types
        raise ModelLoadError(f"{shown_as}: could not load the model ({one_line(exc)})") from exc
    require_all_weights(loading_info, shown_as)
    return model, tokenizer
