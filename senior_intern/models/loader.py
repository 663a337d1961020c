"""``load_base_model``: a frozen base model and its tokenizer, ready to be wrapped with LoRA."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from senior_intern.models import cache
from senior_intern.models.info import ModelInfo, ModelLoadError, one_line, require_all_weights
from senior_intern.models.inspection import hf_layout, metadata, read_safetensors_header, resolve_model_path

if TYPE_CHECKING:
    import torch

DTYPE_NAMES = ("float32", "bfloat16", "float16")
BASE_QUANTIZATIONS = ("none", "int8", "int4", "auto")  # as config.BASE_QUANTIZATIONS
Progress = Callable[[int, int], None]
"""``progress(done, total)``: tensors read so far while a base model opens."""


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
    *,
    base_quantization: str = "none",
    progress: Progress | None = None,
    gguf_compact: bool = True,
) -> LoadedModel:
    """Load a Hugging Face model folder or a ``.gguf`` file for LoRA training.

    ``dtype`` None or ``"auto"`` means float32 on the CPU and bfloat16 (float16 where the GPU
    lacks bfloat16) elsewhere; otherwise a ``torch.dtype`` or one of ``DTYPE_NAMES``.

    A GGUF file opens compactly: its linear weights stay in the file's blocks (``FrozenLinear``,
    dequantised per layer when used) and the rest is dequantised into ``dtype``; its config and
    tokenizer are kept in the model cache after the first open. An architecture the compact
    reader cannot map, or ``gguf_compact=False``, loads through transformers' float path
    instead (every tensor dequantised into ``dtype`` in memory; nothing written to disk).
    ``base_quantization`` (Hugging Face folders; ignored for GGUF, which is compact already):
    ``none`` keeps the float weights, ``int8`` / ``int4`` quantise every linear layer but the LM
    head at load, ``auto`` picks by the machine's memory (``pick_base_quantization``).
    ``progress(done, total)`` is called as tensors are read. Raises ``ModelLoadError`` (a
    ``ValueError``) naming the path and the problem.
    """
    started = time.perf_counter()
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    source = resolve_model_path(path)
    if base_quantization not in BASE_QUANTIZATIONS:
        raise ValueError(f"unknown base_quantization {base_quantization!r}; use one of {', '.join(BASE_QUANTIZATIONS)}")
    info = metadata(source)
    held = "float"
    if info.source_format == "gguf":
        model, tokenizer, held = _load_gguf(source, info.content_hash, torch_dtype, progress, gguf_compact)
    else:
        if progress:
            progress(0, 1)
        model, tokenizer = _load_folder(source, source, torch_dtype)
        kind = pick_base_quantization(base_quantization, info.parameter_count)
        if kind != "none":
            from senior_intern.models.quantized import quantize_linears

            head = model.get_output_embeddings()
            quantize_linears(model, kind, skip={n for n, m in model.named_modules() if m is head})
            held = kind
        if progress:
            progress(1, 1)
    model.to(torch_device)
    model.eval()
    model.requires_grad_(False)
    info = replace(
        info,
        dtype=str(model.dtype).removeprefix("torch."),
        load_seconds=time.perf_counter() - started,
        base_held=held,
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


def pick_base_quantization(choice: str, parameter_count: int) -> str:
    """``auto`` -> ``none`` when a float32 copy of the base takes under a quarter of this machine's
    memory, else ``int8`` under a half, else ``int4``; other choices are returned as given."""
    if choice != "auto":
        return choice
    import psutil

    total = int(psutil.virtual_memory().total)
    need = 4 * parameter_count
    if total and need < total / 4:
        return "none"
    if total and need / 4 < total / 2:
        return "int8"
    return "int4"


def _load_gguf(source: Path, content_hash: str, dtype: torch.dtype,
               progress: Progress | None, compact: bool) -> tuple[Any, Any, str]:
    """The compact model of a GGUF file (config and tokenizer from the cache), and how it is held."""
    from transformers import AutoConfig, AutoTokenizer

    from senior_intern.models.gguf_header import read_gguf_header
    from senior_intern.models.gguf_model import CompactUnsupported, load_compact_gguf

    folder = cache.cached_conversion(content_hash) or cache.convert_gguf(source, content_hash)
    try:
        config = AutoConfig.from_pretrained(folder, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError):  # a damaged cache entry is rebuilt from the source
        folder = cache.convert_gguf(source, content_hash)
        config = AutoConfig.from_pretrained(folder, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    if not compact:
        return _load_gguf_float(source, dtype), tokenizer, "float"
    try:
        model = load_compact_gguf(source, config, read_gguf_header(source).architecture, dtype, progress)
        return model, tokenizer, "gguf"
    except CompactUnsupported:
        return _load_gguf_float(source, dtype), tokenizer, "float"


def _load_gguf_float(source: Path, dtype: torch.dtype) -> Any:
    """transformers' own GGUF loader: every tensor dequantised to ``dtype`` in memory."""
    from transformers import AutoModelForCausalLM

    try:
        from transformers import GgufConfig  # transformers 5: ask for plain dense weights
    except ImportError:  # older transformers always dequantise GGUF
        GgufConfig = None
    kwargs: dict = {"gguf_file": source.name}
    if GgufConfig is not None:
        kwargs["quantization_config"] = GgufConfig(gguf_file=source.name, dequantize=True)
    try:
        model, loading_info = AutoModelForCausalLM.from_pretrained(
            source.parent, dtype=dtype, output_loading_info=True, **kwargs
        )
    except MemoryError:
        raise
    except Exception as exc:  # transformers and gguf raise many types; the user needs one line
        raise ModelLoadError(f"{source}: could not load the GGUF file ({one_line(exc)})") from exc
    require_all_weights(loading_info, source)
    return model


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
