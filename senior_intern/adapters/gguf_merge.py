"""Merge a PEFT LoRA adapter into a GGUF base model and write a full GGUF that llama.cpp loads alone.

The output keeps the base's header (metadata, tokenizer, chat template) field for field and
copies every tensor the adapter does not touch byte for byte. A touched weight is dequantized
to float32, gets ``scale * B @ A`` added (rows reordered for Llama's q/k the way the GGUF
converter reorders the base, see ``gguf.llama_qk_permute``) and is encoded in the chosen type.

Types: ``same`` keeps each touched tensor's own type where the ``gguf`` package can encode it
(F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) and falls back to Q8_0 for the others (the
K-quants and i-quants, which the package only decodes); ``q8_0``, ``q4_0``, ``f16`` and
``bf16`` force that type. A tensor whose rows do not split into the type's blocks is written
as F16. Every fallback is listed in the result's ``notes``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import gguf
import numpy as np

from senior_intern.adapters.gguf import (
    _ARCH_BY_NAME,
    _QK_PERMUTED_ARCHITECTURES,
    _gguf_tensor_name,
    check_export_target,
    llama_qk_permute,
    read_base_info,
)
from senior_intern.adapters.merge import LoraModuleWeights, read_peft_adapter

Q = gguf.GGMLQuantizationType
MERGED_TYPES: dict[str, Q | None] = {"same": None, "q8_0": Q.Q8_0, "q4_0": Q.Q4_0, "f16": Q.F16, "bf16": Q.BF16}
# Types the gguf package can encode (it decodes more: the K-quants and i-quants).
ENCODABLE_TYPES = frozenset({Q.F32, Q.F16, Q.BF16, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q8_0})
# Fields the writer makes itself from its own state.
_WRITER_OWNED_FIELDS = frozenset({gguf.Keys.General.ARCHITECTURE})

Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class MergedGguf:
    """What ``export_merged_gguf`` wrote: the file, the merged tensors' types, and any fallbacks."""

    path: Path
    merged: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def export_merged_gguf(
    adapter_dir: str | Path,
    base_gguf: str | Path,
    out_path: str | Path,
    qtype: str = "same",
    overwrite: bool = False,
    on_progress: Progress | None = None,
) -> MergedGguf:
    """Write ``base_gguf`` with the adapter merged in to ``out_path`` (see the module docstring).

    ``on_progress(done, total, tensor_name)`` is called once per tensor as it is prepared.
    The file is written to a temporary name beside ``out_path`` and renamed into place; an
    existing ``out_path`` is refused unless ``overwrite``, the base itself always.
    Raises ValueError for a Hugging Face folder base, an unknown type, or an adapter that does
    not fit the base (layer names, shapes, DoRA, biases: as ``export_gguf``).
    """
    base = Path(base_gguf)
    check_export_target(out_path, base, overwrite)
    if qtype not in MERGED_TYPES:
        raise ValueError(f"type must be one of {', '.join(MERGED_TYPES)}, got {qtype!r}")
    if base.is_dir():
        raise ValueError(
            f"{base} is a Hugging Face folder; a merged GGUF is made from a .gguf base. Merge into a folder "
            "(adapters merge) and convert it with llama.cpp's convert_hf_to_gguf.py, or pass the base's .gguf"
        )
    adapter = read_peft_adapter(adapter_dir)
    info = read_base_info(base)
    name_map = gguf.get_tensor_name_map(_ARCH_BY_NAME[info.architecture], info.block_count)
    deltas: dict[str, LoraModuleWeights] = {}
    for lora in adapter.modules:
        deltas[_gguf_tensor_name(lora, name_map, info, adapter.path)] = lora

    reader = gguf.GGUFReader(base)
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent)
    os.close(handle)
    result = MergedGguf(out)
    try:
        writer = gguf.GGUFWriter(tmp_name, info.architecture)
        _copy_fields(reader, writer)
        total = len(reader.tensors)
        for done, tensor in enumerate(reader.tensors, start=1):
            lora = deltas.get(tensor.name)
            if lora is None:
                writer.add_tensor(tensor.name, tensor.data, raw_dtype=tensor.tensor_type)
            else:
                data, used = _merged_tensor(tensor, lora, name_map, info, MERGED_TYPES[qtype], result.notes)
                writer.add_tensor(tensor.name, data, raw_dtype=used)
                result.merged[tensor.name] = used.name
            if on_progress is not None:
                on_progress(done, total, tensor.name)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        del reader
        os.replace(tmp_name, out)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return result


def _copy_fields(reader: gguf.GGUFReader, writer: gguf.GGUFWriter) -> None:
    """Every key/value field of the base, in order, with its own value type."""
    for name, fld in reader.fields.items():
        if name.startswith("GGUF.") or name in _WRITER_OWNED_FIELDS or not fld.types:
            continue
        if name == gguf.Keys.General.ALIGNMENT:
            writer.data_alignment = int(fld.contents())
        vtype = fld.types[0]
        sub_type = fld.types[-1] if vtype == gguf.GGUFValueType.ARRAY and len(fld.types) > 1 else None
        if vtype == gguf.GGUFValueType.ARRAY and sub_type is None:
            sub_type = gguf.GGUFValueType.INT32  # an empty array: its element type is not stored
        writer.add_key_value(name, fld.contents(), vtype, sub_type=sub_type)


def _merged_tensor(tensor, lora: LoraModuleWeights, name_map, info, forced: Q | None, notes: list[str]):
    """The base weight plus the adapter's delta, encoded; returns (data, type used)."""
    weight = gguf.quants.dequantize(tensor.data, tensor.tensor_type).astype(np.float32)
    delta = lora.delta().numpy().astype(np.float32)
    if not np.isfinite(delta).all():
        raise ValueError(f"'{lora.module}' holds NaN or Inf values; the adapter is corrupt or diverged")
    if info.architecture in _QK_PERMUTED_ARCHITECTURES:
        kind = name_map.get_type(lora.module)
        if kind == gguf.MODEL_TENSOR.ATTN_Q:
            delta = llama_qk_permute(delta, info.head_count)
        elif kind == gguf.MODEL_TENSOR.ATTN_K:
            delta = llama_qk_permute(delta, info.head_count_kv)
    weight = weight.reshape(delta.shape) + delta
    own = Q(tensor.tensor_type)
    target = forced
    if target is None:
        target = own if own in ENCODABLE_TYPES else Q.Q8_0
        if target != own:
            notes.append(f"{tensor.name}: the gguf package cannot write {own.name}; written as Q8_0")
    try:
        return gguf.quants.quantize(weight, target), target
    except gguf.QuantError:
        notes.append(f"{tensor.name}: rows of {weight.shape[-1]} values do not split into {target.name} blocks; written as F16")
        return gguf.quants.quantize(weight, Q.F16), Q.F16
