"""A GGUF base opened compactly: linear weights stay in the file's blocks (``FrozenLinear``).

``load_compact_gguf`` builds the transformers model for the file's config on the ``meta``
device (no memory, no random init), then reads the file's tensors once:

- every linear weight (q/k/v/o, gate/up/down, an untied LM head) becomes a ``FrozenLinear``
  holding a copy of the file's blocks; llama-style q/k rows are put back in Hugging Face order
  by permuting whole rows of blocks (the permutation transformers applies to the float weight);
- a plain token embedding (``nn.Embedding``; not a scaled one such as Gemma's) in any block type
  but F32 becomes a ``FrozenEmbedding`` over the file's blocks, and a tied LM head a
  ``FrozenLinear`` over the same blocks;
- every other tensor (norms, biases, other embeddings) is dequantised into the compute dtype, through
  the same per-architecture processing transformers applies (``TENSOR_PROCESSORS``);
- buffers computed at construction (rotary frequencies) are rebuilt on the CPU.

``progress(done, total)`` is called as tensors are read. Architectures whose GGUF tensors need
conversions other than the q/k permutation and norm offsets raise ``CompactUnsupported``, and
the loader falls back to transformers' float path.
"""

from __future__ import annotations

from collections.abc import Callable
from math import prod
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from torch import nn

from gguf import GGMLQuantizationType

from senior_intern.models import dequant
from senior_intern.models.gguf_header import GGUFTensor, read_gguf_header
from senior_intern.models.info import ModelLoadError, one_line
from senior_intern.models.quantized import FrozenEmbedding, FrozenLinear

Progress = Callable[[int, int], None]
_CHUNK_ROWS = 2048


class CompactUnsupported(Exception):
    """The architecture's GGUF tensors cannot be mapped compactly; use the float path."""


def _processor_class(architecture: str) -> tuple[Any, bool]:
    """transformers' tensor processor class for the architecture, and whether it is one the compact
    reader reproduces (none, Llama's q/k permutation, Gemma's norm offset)."""
    from transformers.modeling_gguf_pytorch_utils import (
        TENSOR_PROCESSORS,
        Gemma2TensorProcessor,
        LlamaTensorProcessor,
        TensorProcessor,
    )

    cls = TENSOR_PROCESSORS.get(architecture, TensorProcessor)
    return cls, cls in (TensorProcessor, LlamaTensorProcessor, Gemma2TensorProcessor)


def compact_supported(architecture: str) -> bool:
    """Whether a GGUF file of this ``general.architecture`` opens compactly (else: the float path)."""
    return _processor_class(architecture)[1]


def _processor(architecture: str, config: Any) -> Any:
    cls, supported = _processor_class(architecture)
    if not supported:
        raise CompactUnsupported(f"GGUF architecture {architecture} needs {cls.__name__}")
    return cls(config=config.to_dict())


def _reverse_permute_rows(data: torch.Tensor, n_head: int) -> torch.Tensor:
    """llama.cpp's q/k row interleave undone on whole rows (of blocks or of values)."""
    rows = data.shape[0]
    dim = rows // n_head // 2
    return data.reshape(n_head, dim, 2, -1).transpose(1, 2).reshape(rows, -1).contiguous()


def _raw_rows(tensor: GGUFTensor, file: BinaryIO, data_offset: int) -> torch.Tensor:
    """The tensor's bytes as uint8 [rows, row_bytes], read from the file (a copy)."""
    rows = prod(tensor.shape[1:]) if len(tensor.shape) > 1 else 1
    raw = bytearray(tensor.nbytes)
    file.seek(data_offset + tensor.offset)
    if file.readinto(raw) != len(raw):
        raise ModelLoadError(f"{file.name}: truncated GGUF file (tensor {tensor.name} runs past its end)")
    return torch.frombuffer(raw, dtype=torch.uint8).reshape(rows, -1)


def _dense(tensor: GGUFTensor, raw: torch.Tensor, dtype: torch.dtype, processor: Any) -> torch.Tensor:
    """A non-linear tensor dequantised, processed as transformers does, in ``dtype``."""
    type_name = GGMLQuantizationType(tensor.ggml_type).name
    shape = [int(d) for d in reversed(tensor.shape)]  # ggml lists the fastest dimension first
    if type_name in dequant.KERNELS:  # in row chunks, so a large embedding needs no float32 temporaries
        out = torch.empty(raw.shape[0], shape[-1], dtype=torch.float32)
        for start in range(0, raw.shape[0], _CHUNK_ROWS):
            out[start:start + _CHUNK_ROWS] = dequant.dequantize(raw[start:start + _CHUNK_ROWS], type_name, shape[-1])
        values = out.reshape(shape).numpy()
    else:
        from gguf.quants import dequantize

        values = dequantize(raw.numpy(), GGMLQuantizationType(tensor.ggml_type)).reshape(shape)
    values = processor.process(weights=values, name=tensor.name).weights
    return torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32)).to(dtype)


def _hf_to_gguf_names(model: nn.Module, architecture: str) -> dict[str, str]:
    """GGUF tensor name -> the model's parameter name, by gguf's tensor name map (built once)."""
    from gguf import MODEL_ARCH_NAMES, get_tensor_name_map

    arch = next((key for key, value in MODEL_ARCH_NAMES.items() if value == architecture), None)
    if arch is None:
        raise CompactUnsupported(f"GGUF architecture {architecture} is unknown to the gguf package")
    name_map = get_tensor_name_map(arch, model.config.num_hidden_layers)
    names: dict[str, str] = {}
    for hf_name in model.state_dict():
        stem, dot, suffix = hf_name.rpartition(".")
        if suffix not in ("weight", "bias"):
            stem, dot, suffix = hf_name, "", ""
        parts = stem.split(".")
        for start in range(len(parts)):  # the full name, then without leading prefixes
            gguf_name = name_map.get_name(".".join(parts[start:]))
            if gguf_name is not None:
                names.setdefault(gguf_name + dot + suffix, hf_name)
                break
    return names


def _set_child(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def load_compact_gguf(source: Path, config: Any, architecture: str, dtype: torch.dtype,
                      progress: Progress | None = None) -> nn.Module:
    """The causal LM of ``source`` with compact linear weights; see the module docstring.

    ``config``: the transformers config read from the file's metadata; ``architecture``: the
    file's ``general.architecture``. Raises ``ModelLoadError`` naming the file and the tensor
    for a tensor type without a kernel or a missing tensor, ``CompactUnsupported`` (see above).
    """
    from transformers import AutoModelForCausalLM

    processor = _processor(architecture, config)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    names = _hf_to_gguf_names(model, architecture)
    header = read_gguf_header(source)
    tied = bool(getattr(config, "tie_word_embeddings", False))
    head = model.get_output_embeddings()
    heads = {n for n, m in model.named_modules() if m is head} if tied else set()
    n_head, n_kv = config.num_attention_heads, getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    permute = type(processor).__name__ == "LlamaTensorProcessor"
    total = len(header.tensors)
    if progress:
        progress(0, total)
    pending: list[tuple[str, GGUFTensor, torch.Tensor]] = []
    with open(source, "rb") as file:
        for done, tensor in enumerate(header.tensors, 1):
            hf_name = names.get(tensor.name)
            if hf_name is not None:
                _place(model, hf_name, tensor, _raw_rows(tensor, file, header.data_offset), heads, pending,
                       n_head if permute else 0, n_kv if permute else 0, dtype, source)
            if progress and (done % 16 == 0 or done == total):
                progress(done, total)
    for hf_name, tensor, raw in pending:  # after the linears, so a bias lands on its FrozenLinear
        module_name, _, attr = hf_name.rpartition(".")
        module = model.get_submodule(module_name)
        value = _dense(tensor, raw, dtype, processor)
        expected = getattr(module, attr).shape
        if tuple(value.shape) != tuple(expected):
            raise ModelLoadError(f"{source}: tensor {tensor.name} has {list(value.shape)} values, "
                                 f"the config expects {list(expected)}")
        setattr(module, attr, nn.Parameter(value, requires_grad=False))
    if tied:
        embedding = model.get_input_embeddings()
        if isinstance(embedding, FrozenEmbedding):  # the head reads the same blocks
            for name in heads:
                _set_child(model, name, embedding.as_head())
        else:
            model.get_output_embeddings().weight = embedding.weight
    _rebuild_meta_buffers(model, source)
    missing = [n for n, p in model.named_parameters() if p.is_meta]
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise ModelLoadError(f"{source}: the file's tensors lack {len(missing)} tensor(s) the model needs ({shown}); "
                             "the weights do not belong to this config")
    return model


def _place(model: nn.Module, hf_name: str, tensor: GGUFTensor, raw: torch.Tensor, heads: set[str],
           pending: list, n_head: int, n_kv: int, dtype: torch.dtype, source: Path) -> None:
    """Put a linear weight into a ``FrozenLinear`` now; queue any other tensor in ``pending``.
    ``n_head`` / ``n_kv`` > 0: undo llama.cpp's q/k row permutation."""
    module_name, _, attr = hf_name.rpartition(".")
    module = model.get_submodule(module_name)
    type_name = GGMLQuantizationType(tensor.ggml_type).name
    if type(module) is nn.Embedding and attr == "weight" and type_name in dequant.KERNELS and type_name != "F32":
        if tuple(raw.shape) == (module.num_embeddings, dequant.row_bytes(type_name, module.embedding_dim)):
            _set_child(model, module_name, FrozenEmbedding(module.num_embeddings, module.embedding_dim, type_name, raw,
                                                           dtype, module.padding_idx))
            return
    if not (type(module) is nn.Linear and attr == "weight" and module_name not in heads):
        pending.append((hf_name, tensor, raw))
        return
    try:
        dequant.check_supported(type_name, f"{source}: tensor {tensor.name}")
    except dequant.UnsupportedQuantization as exc:
        raise ModelLoadError(str(exc)) from None
    if n_head and ".attn_q." in tensor.name:
        raw = _reverse_permute_rows(raw, n_head)
    elif n_kv and ".attn_k." in tensor.name:
        raw = _reverse_permute_rows(raw, n_kv)
    if tuple(raw.shape) != (module.out_features, dequant.row_bytes(type_name, module.in_features)):
        raise ModelLoadError(f"{source}: tensor {tensor.name} has shape {list(tensor.shape)}, the config "
                             f"expects [{module.in_features}, {module.out_features}]")
    # A linear with a bias (Qwen2's q/k/v) keeps a placeholder: the file's bias tensor, queued in
    # ``pending``, replaces it; one the file lacks stays on the meta device and is reported missing.
    bias = None if module.bias is None else torch.empty(module.out_features, device="meta")
    _set_child(model, module_name, FrozenLinear(module.in_features, module.out_features, type_name, raw, bias=bias, dtype=dtype))


def _rebuild_meta_buffers(model: nn.Module, source: Path) -> None:
    """Modules whose buffers are made in ``__init__`` (rotary embeddings) built again on the CPU."""
    for name, module in list(model.named_modules()):
        if any(b.is_meta for b in module.buffers(recurse=False)):
            try:
                with torch.device("cpu"):
                    fresh = type(module)(config=model.config)
            except TypeError as exc:
                raise CompactUnsupported(f"{name} ({type(module).__name__}) cannot be rebuilt: {one_line(exc)}") from exc
            _set_child(model, name, fresh)
