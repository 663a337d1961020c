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

A Hugging Face folder base (Llama, Mistral, Qwen2, Qwen3) is merged in float32 and written whole
by ``gguf_hf.write_hf_gguf``: ``same`` is then the folder's own float type (F32, F16 or BF16),
the tokenizer comes from its ``tokenizer.json`` or from ``tokenizer_from`` (a GGUF).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import gguf
import numpy as np

from senior_intern.adapters.gguf import (
    _ARCH_BY_NAME,
    _gguf_tensor_name,
    check_export_target,
    read_base_info,
    rows_for_llama_cpp,
)
from senior_intern.adapters.gguf_hf import MATRIX_TYPES, check_hf_config, write_hf_gguf
from senior_intern.adapters.merge import LoraModuleWeights, PeftLoraAdapter, read_peft_adapter

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
    tokenizer_from: str | Path | None = None,
) -> MergedGguf:
    """Write ``base_gguf`` with the adapter merged in to ``out_path`` (see the module docstring).

    ``on_progress(done, total, tensor_name)`` is called once per tensor as it is prepared.
    The file is written to a temporary name beside ``out_path`` and renamed into place; an
    existing ``out_path`` is refused unless ``overwrite``, the base itself always.
    ``base_gguf`` may be a Hugging Face folder (see the module docstring; ``tokenizer_from``
    is only used then). Raises ValueError for an unknown type, an architecture or tokenizer
    the folder writer does not know, or an adapter that does not fit the base (layer names,
    shapes, DoRA, biases: as ``export_gguf``).
    """
    base = Path(base_gguf)
    check_export_target(out_path, base, overwrite)
    if qtype not in MERGED_TYPES:
        raise ValueError(f"type must be one of {', '.join(MERGED_TYPES)}, got {qtype!r}")
    adapter = read_peft_adapter(adapter_dir)
    if base.is_dir():
        return _export_from_hf_folder(adapter, base, Path(out_path), qtype, tokenizer_from, on_progress)
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
        coarse = sorted({t for t in result.merged.values() if t in _COARSE_TYPES})
        if qtype == "same" and coarse:
            result.notes.append(f"The merged tensors are re-encoded as {', '.join(coarse)}, the base's own type: that "
                                "rounding can lose a small adapter's change (a trained phrase was lost this way on a "
                                "Q4_1 base); --type q8_0 keeps it at about twice the size of those tensors")
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


# Types of 4 bits or fewer per weight: re-encoding a merged weight in them can round a LoRA's change away.
_COARSE_TYPES = {"Q2_K", "Q3_K", "Q4_0", "Q4_1", "Q4_K", "IQ4_NL", "IQ4_XS"}


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
    delta = rows_for_llama_cpp(delta, name_map.get_type(lora.module), info.architecture, info.head_count, info.head_count_kv)
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


_FOLDER_DTYPES = {"float32": "f32", "float16": "f16", "bfloat16": "bf16"}


def _export_from_hf_folder(adapter: PeftLoraAdapter, base: Path, out: Path, qtype: str,
                           tokenizer_from: str | Path | None, on_progress: Progress | None) -> MergedGguf:
    """Merge into a Hugging Face folder's float weights and write the whole model as GGUF."""
    from safetensors import safe_open

    config = json.loads((base / "config.json").read_text(encoding="utf-8")) if (base / "config.json").is_file() else None
    if config is None:
        raise FileNotFoundError(f"{base / 'config.json'} is missing: the base model folder must be a Hugging Face model")
    check_hf_config(config, str(base / "config.json"))
    if "quantization_config" in config:
        raise ValueError(f"{base} holds a quantised checkpoint (quantization_config in config.json); use the float base")
    if config.get("tie_word_embeddings") and any(lora.module == "lm_head" for lora in adapter.modules):
        raise ValueError(f"{adapter.path}: 'lm_head' is tied to the token embeddings in {base}; "
                         "a GGUF has no separate output tensor to merge it into")
    info = read_base_info(base)
    name_map = gguf.get_tensor_name_map(_ARCH_BY_NAME[info.architecture], info.block_count)
    targets = {lora.module: _gguf_tensor_name(lora, name_map, info, adapter.path) for lora in adapter.modules}
    files = sorted(base.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{base} has no *.safetensors weights to merge into")
    state: dict[str, np.ndarray] = {}
    for file in files:
        with safe_open(str(file), framework="pt") as handle:
            for key in handle.keys():
                state[key] = handle.get_tensor(key).float().numpy()
    for lora in adapter.modules:
        key = f"{lora.module}.weight"
        if key not in state:
            raise ValueError(f"{adapter.path}: the base folder {base} has no weight '{key}'")
        delta = lora.delta().numpy().astype(np.float32)
        if not np.isfinite(delta).all():
            raise ValueError(f"'{lora.module}' holds NaN or Inf values; the adapter is corrupt or diverged")
        state[key] = state[key] + delta
    if qtype == "same":
        own = str(config.get("torch_dtype") or config.get("dtype") or "float16")
        matrix_type = _FOLDER_DTYPES.get(own, "f16")
    else:
        matrix_type = qtype
    out.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent)
    os.close(handle)
    result = MergedGguf(out)
    try:
        written = write_hf_gguf(tmp_name, config, state, matrix_type=matrix_type, tokenizer_from=tokenizer_from,
                                hf_folder=base, name=f"{base.name} + {adapter.path.name}", on_progress=on_progress)
        wanted = MATRIX_TYPES[matrix_type].name
        for name, used in written.items():
            if used == "F16" and wanted != "F16":
                result.notes.append(f"{name}: rows do not split into {wanted} blocks; written as F16")
        result.merged.update({name: written[name] for name in targets.values()})
        os.replace(tmp_name, out)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return result
