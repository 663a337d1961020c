"""Export a PEFT LoRA adapter as a GGUF LoRA adapter that llama.cpp loads with ``--lora``.

The file follows the conventions of llama.cpp's ``convert_lora_to_gguf.py`` and the checks of
its ``llama-adapter.cpp`` loader:

- metadata ``general.architecture`` (must equal the base model's), ``general.type = "adapter"``,
  ``adapter.type = "lora"`` and ``adapter.lora.alpha`` (float32);
- per adapted weight ``<base tensor>.weight`` two tensors, ``.lora_a`` holding PEFT's A
  ``[r, in]`` and ``.lora_b`` holding PEFT's B ``[out, r]`` (numpy order; GGUF stores the dims
  reversed, so llama.cpp sees ``a->ne = [in, r]`` and ``b->ne = [r, out]``);
- llama.cpp scales ``B @ A`` by ``alpha / r`` with ``r = b->ne[0]`` per tensor, so rank patterns
  need nothing; rsLoRA and per-module alphas are folded in (see ``export_gguf``);
- Llama's HF->GGUF conversion reorders the rows of the q and k projections for its rotary
  layout; B's rows get the same reordering (A is unchanged). Qwen2/3, Gemma 1/2/3 and Phi-3
  are converted without it, so their rows are left alone;
- LoRA on ``lm_head`` is an ordinary ``output.weight`` pair (refused when the base ties it to
  the embeddings, so it has no ``output`` tensor); LoRA on the embeddings is refused by
  ``read_peft_adapter``.

Only the ``gguf`` Python package is needed; no llama.cpp checkout.
"""

from __future__ import annotations

import functools
import json
import math
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from pathlib import Path
from types import MappingProxyType

import gguf
import numpy as np

from senior_intern.adapters.merge import LoraModuleWeights, read_peft_adapter

GGUF_DTYPES: dict[str, gguf.GGMLQuantizationType] = {
    "f32": gguf.GGMLQuantizationType.F32,
    "f16": gguf.GGMLQuantizationType.F16,
    "bf16": gguf.GGMLQuantizationType.BF16,
    "q8_0": gguf.GGMLQuantizationType.Q8_0,
}

# Hugging Face model_type -> GGUF architecture, for the families whose convert_hf_to_gguf.py
# mapping is known here (Mistral is written as "llama"; Phi-3 keeps its fused qkv_proj and
# gate_up_proj as attn_qkv and ffn_up; Gemma 3 only as the text model, whose layer names have
# no "language_model" prefix).
_HF_MODEL_TYPE_TO_ARCH = {
    "llama": "llama",
    "mistral": "llama",
    "qwen2": "qwen2",
    "qwen3": "qwen3",
    "gemma": "gemma",
    "gemma2": "gemma2",
    "gemma3_text": "gemma3",
    "phi3": "phi3",
}
SUPPORTED_ARCHITECTURES = frozenset(_HF_MODEL_TYPE_TO_ARCH.values())
# Architectures whose HF->GGUF conversion reorders the q/k rows (rotary layout).
_QK_PERMUTED_ARCHITECTURES = frozenset({"llama"})
_ARCH_BY_NAME = {name: arch for arch, name in gguf.MODEL_ARCH_NAMES.items()}


@dataclass(frozen=True)
class GgufBaseInfo:
    """What the export needs to know about the base model.

    ``tensor_shapes`` maps GGUF tensor names (``blk.0.attn_q.weight``) to numpy-order shapes
    ``(out, in)`` (read-only); it is empty when the base's weights cannot be inspected cheaply.
    """

    architecture: str
    block_count: int
    head_count: int
    head_count_kv: int
    tensor_shapes: Mapping[str, tuple[int, ...]] = field(default_factory=lambda: MappingProxyType({}))


def read_base_info(base_model_path: str | Path) -> GgufBaseInfo:
    """Read architecture, block and head counts (and weight shapes) from a GGUF file or HF folder.

    Raises FileNotFoundError when the path is neither, ValueError for an architecture the GGUF
    LoRA export does not support.
    """
    path = Path(base_model_path)
    if path.is_file() and path.suffix.lower() == ".gguf":
        stat = path.stat()
        info = _info_from_gguf(path.resolve(), stat.st_mtime_ns, stat.st_size)
    elif path.is_dir():
        info = _info_from_hf_folder(path)
    else:
        raise FileNotFoundError(f"Base model not found: {path} (expected a .gguf file or a Hugging Face folder)")
    if info.architecture not in SUPPORTED_ARCHITECTURES:
        raise ValueError(
            f"{path}: architecture '{info.architecture}' is not supported by the GGUF LoRA export "
            f"(supported: {', '.join(sorted(SUPPORTED_ARCHITECTURES))}). Merge the adapter instead "
            "and convert the merged folder with llama.cpp's convert_hf_to_gguf.py."
        )
    return info


@functools.lru_cache(maxsize=4)
def _info_from_gguf(path: Path, mtime_ns: int, size: int) -> GgufBaseInfo:
    """Header fields and tensor shapes of a base GGUF file (tensor data is not read).

    Parsing a header with a large vocabulary takes seconds, so results are cached per file
    version (``mtime_ns`` and ``size`` are part of the key).
    """
    reader = gguf.GGUFReader(path)

    def value(key: str, default=None):
        fld = reader.get_field(key)
        return default if fld is None else fld.contents()

    arch = value(gguf.Keys.General.ARCHITECTURE)
    if arch is None:
        raise ValueError(f"{path}: no general.architecture in the GGUF header")
    if value(gguf.Keys.General.TYPE, "model") != "model":
        raise ValueError(f"{path} is a GGUF {value(gguf.Keys.General.TYPE)!r}, not a base model")
    heads = value(gguf.Keys.Attention.HEAD_COUNT.format(arch=arch), 0)
    heads_kv = value(gguf.Keys.Attention.HEAD_COUNT_KV.format(arch=arch), heads)
    if not isinstance(heads, int) or not isinstance(heads_kv, int):
        raise ValueError(f"{path}: per-layer head counts are not supported by the GGUF LoRA export")
    return GgufBaseInfo(
        architecture=arch,
        block_count=int(value(gguf.Keys.LLM.BLOCK_COUNT.format(arch=arch), 0)),
        head_count=heads,
        head_count_kv=heads_kv,
        tensor_shapes=MappingProxyType(
            {t.name: tuple(int(d) for d in reversed(t.shape.tolist())) for t in reader.tensors}
        ),
    )


def _info_from_hf_folder(path: Path) -> GgufBaseInfo:
    """config.json fields of a Hugging Face folder, plus weight shapes from its safetensors headers."""
    from safetensors import safe_open

    config_path = path / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path} is missing: the base model folder must be a Hugging Face model")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    model_type = config.get("model_type", "")
    arch = _HF_MODEL_TYPE_TO_ARCH.get(model_type, model_type)
    blocks = int(config.get("num_hidden_layers", 0))
    heads = int(config.get("num_attention_heads", 0))
    heads_kv = int(config.get("num_key_value_heads") or heads)
    shapes: dict[str, tuple[int, ...]] = {}
    if arch in SUPPORTED_ARCHITECTURES:
        name_map = gguf.get_tensor_name_map(_ARCH_BY_NAME[arch], blocks)
        for file in sorted(path.glob("*.safetensors")):
            with safe_open(str(file), framework="pt") as handle:
                for key in handle.keys():
                    gguf_name = name_map.get_name(key, try_suffixes=(".weight", ".bias"))
                    if gguf_name is not None:
                        shapes[gguf_name] = tuple(handle.get_slice(key).get_shape())
    return GgufBaseInfo(arch, blocks, heads, heads_kv, MappingProxyType(shapes))


def rows_for_llama_cpp(rows: np.ndarray, kind: Any, architecture: str, n_head: int, n_kv: int) -> np.ndarray:
    """``rows`` of a q or k projection (``kind``: the tensor's ``gguf.MODEL_TENSOR``) in llama.cpp's
    rotary order for a Llama-family ``architecture`` (``llama_qk_permute``); any other as it is."""
    if architecture not in _QK_PERMUTED_ARCHITECTURES:
        return rows
    if kind == gguf.MODEL_TENSOR.ATTN_Q:
        return llama_qk_permute(rows, n_head)
    if kind == gguf.MODEL_TENSOR.ATTN_K:
        return llama_qk_permute(rows, n_kv)
    return rows


def llama_qk_permute(rows: np.ndarray, n_head: int) -> np.ndarray:
    """Reorder the rows of a Llama q or k projection the way llama.cpp's HF->GGUF converter does.

    ``rows`` is ``[out, ...]`` (a q/k weight ``[out, in]`` or a LoRA B ``[out, r]``) with
    ``out = n_head * head_dim``; use the query head count for q and the key/value head count for
    k. Within each head, Hugging Face keeps the two rotary halves as blocks
    ``[x_0..x_{d/2-1}, y_0..y_{d/2-1}]``; GGUF interleaves them ``[x_0, y_0, x_1, y_1, ...]``.
    Returns a new array of the same shape.
    """
    n_rows = rows.shape[0]
    if n_head <= 0 or n_rows % n_head or (n_rows // n_head) % 2:
        raise ValueError(f"cannot split {n_rows} rows into {n_head} heads of an even size")
    head_dim = n_rows // n_head
    half = np.arange(head_dim // 2)
    within_head = np.stack([half, half + head_dim // 2], axis=1).reshape(-1)
    order = (np.arange(n_head)[:, None] * head_dim + within_head[None, :]).reshape(-1)
    return rows[order]


def check_export_target(out_path: str | Path, base_model_path: str | Path, overwrite: bool) -> None:
    """Refuse to write over the base model (ever) or over an existing file (unless ``overwrite``)."""
    out, base = Path(out_path).expanduser(), Path(base_model_path).expanduser()
    if out.exists():
        same = base.exists() and (os.path.samefile(out, base) or (base.is_dir() and out.resolve().is_relative_to(base.resolve())))
        if same:
            raise ValueError(f"{out} is the base model; choose another output file (-o)")
        if out.is_dir():
            raise IsADirectoryError(f"{out} is a folder; give a file name for the GGUF adapter (-o)")
        if not overwrite:
            raise FileExistsError(f"{out} already exists; choose another output file (-o) or pass --force to replace it")


def export_gguf(
    adapter_dir: str | Path, base_model_path: str | Path, out_path: str | Path, dtype: str = "f32",
    overwrite: bool = False,
) -> Path:
    """Write a PEFT LoRA adapter as a GGUF LoRA adapter for the GGUF version of its base model.

    ``base_model_path`` is the base GGUF file (architecture, head counts and tensor shapes are
    read from its header) or the base Hugging Face folder. ``dtype`` is ``f32``, ``f16``,
    ``bf16`` or ``q8_0``; with ``q8_0`` a tensor whose rows are not a multiple of 32 values
    (usually lora_b ``[out, r]`` with r < 32) is written as f16, as llama.cpp's converter does.

    Settings GGUF cannot express are folded in: with rsLoRA ``adapter.lora.alpha`` is
    ``alpha * sqrt(r)``; a layer whose own scale (``alpha_pattern``) differs from
    ``adapter.lora.alpha / r_layer`` gets the ratio multiplied into its B. DoRA, trained biases,
    non-finite weights and layers without a GGUF tensor raise ValueError. The file is written
    to a temporary name and renamed into place. An existing ``out_path`` is refused unless
    ``overwrite``; the base model itself is refused always. Returns ``out_path``.
    """
    check_export_target(out_path, base_model_path, overwrite)
    if dtype not in GGUF_DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(GGUF_DTYPES)}, got {dtype!r}")
    adapter = read_peft_adapter(adapter_dir)
    base = read_base_info(base_model_path)
    file_alpha = adapter.alpha * math.sqrt(adapter.rank) if adapter.use_rslora else adapter.alpha
    if file_alpha <= 0:
        raise ValueError(f"{adapter.path}: lora_alpha must be positive for llama.cpp, got {adapter.alpha}")

    name_map = gguf.get_tensor_name_map(_ARCH_BY_NAME[base.architecture], base.block_count)
    tensors: list[tuple[str, np.ndarray]] = []
    for lora in adapter.modules:
        tensor_name = _gguf_tensor_name(lora, name_map, base, adapter.path)
        lora_a, lora_b = _gguf_factors(lora, file_alpha, name_map, base)
        tensors += [(f"{tensor_name}.lora_a", lora_a), (f"{tensor_name}.lora_b", lora_b)]

    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent)
    os.close(handle)
    try:
        _write_file(Path(tmp_name), base.architecture, adapter.path.name, file_alpha, tensors, GGUF_DTYPES[dtype])
        os.replace(tmp_name, out)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return out


def _gguf_tensor_name(lora: LoraModuleWeights, name_map, base: GgufBaseInfo, adapter_path: Path) -> str:
    """The base GGUF tensor name (``blk.0.attn_q.weight``) for an adapted layer, checked against the base."""
    mapped = name_map.get_name(lora.module)
    if mapped is None:
        raise ValueError(
            f"{adapter_path}: layer '{lora.module}' has no GGUF tensor for a '{base.architecture}' model with "
            f"{base.block_count} blocks; only the base's linear layers can be exported "
            "(adapter trained on another model?)"
        )
    name = f"{mapped}.weight"
    expected = (int(lora.b.shape[0]), int(lora.a.shape[1]))
    if base.tensor_shapes:
        if name not in base.tensor_shapes:
            hint = " (tied to the token embeddings)" if mapped == "output" else ""
            raise ValueError(f"{adapter_path}: the base model has no GGUF tensor '{name}' for '{lora.module}'{hint}")
        if base.tensor_shapes[name] != expected:
            raise ValueError(
                f"{adapter_path}: '{lora.module}' is {expected} in the adapter but '{name}' is "
                f"{base.tensor_shapes[name]} in the base (adapter trained on another model?)"
            )
    return name


def _gguf_factors(lora: LoraModuleWeights, file_alpha: float, name_map, base: GgufBaseInfo):
    """lora_a ``[r, in]`` and lora_b ``[out, r]`` as float32 arrays, with the scale folded and rows permuted."""
    a = lora.a.numpy().astype(np.float32, copy=True)
    b = lora.b.numpy().astype(np.float32, copy=True)
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError(f"'{lora.module}' holds NaN or Inf values; the adapter is corrupt or diverged")
    factor = lora.scale / (file_alpha / lora.rank)
    if not math.isclose(factor, 1.0, rel_tol=1e-9):
        b *= np.float32(factor)
    b = rows_for_llama_cpp(b, name_map.get_type(lora.module), base.architecture, base.head_count, base.head_count_kv)
    return a, b


def _write_file(
    path: Path,
    arch: str,
    name: str,
    alpha: float,
    tensors: list[tuple[str, np.ndarray]],
    qtype: gguf.GGMLQuantizationType,
) -> None:
    """Write the adapter header and tensors (encoded as ``qtype``, q8_0 falling back to f16)."""
    writer = gguf.GGUFWriter(path, arch)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(alpha))
    writer.add_name(name)
    for tensor_name, data in tensors:
        try:
            encoded, used = gguf.quants.quantize(data, qtype), qtype
        except gguf.QuantError:
            encoded, used = gguf.quants.quantize(data, gguf.GGMLQuantizationType.F16), gguf.GGMLQuantizationType.F16
        writer.add_tensor(tensor_name, encoded, raw_dtype=used)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
