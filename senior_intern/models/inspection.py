"""What a model is, read from its files without loading weights: ``metadata`` and ``content_hash``.

Accepts a Hugging Face model folder (``config.json``, safetensors weights, tokenizer files) or a
single ``.gguf`` file. Every problem a user can cause raises ``ModelLoadError`` with a one-line
message that names the path.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass
from math import prod
from pathlib import Path
from typing import Any

from senior_intern.layout import read_json_object
from senior_intern.models.gguf_header import GGUFHeader, read_gguf_header
from senior_intern.models.hashing import combined_hash, file_hash
from senior_intern.models.info import ModelInfo, ModelLoadError, one_line

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX_FILE = "model.safetensors.index.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "spiece.model")
PICKLE_WEIGHT_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024

# GGUF architecture names that differ from the transformers model_type they load as.
_GGUF_MODEL_TYPES = {
    "gemma3": "gemma3_text",
    "gemma4": "gemma4_text",
    "qwen2moe": "qwen2_moe",
    "qwen3moe": "qwen3_moe",
    "gpt-oss": "gpt_oss",
    "minimax-m2": "minimax_m2",
}
_TORCH_DTYPE_NAMES = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
    "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool",
}  # fmt: skip


def resolve_model_path(path: str | os.PathLike[str]) -> Path:
    """The absolute path of an existing model file or folder; ``ModelLoadError`` when missing."""
    p = Path(path).expanduser()
    if not p.exists():
        raise ModelLoadError(f"{p}: model not found (no such file or folder)")
    return p.resolve()


def is_gguf(path: Path) -> bool:
    """Whether ``path`` names a GGUF file (by its extension)."""
    return path.is_file() and path.suffix.lower() == ".gguf"


def metadata(path: str | os.PathLike[str]) -> ModelInfo:
    """Read what a model is without loading its weights (``load_seconds`` is 0).

    For a GGUF file the header is read (a few hundredths of a second); for a Hugging Face folder
    ``config.json`` and the safetensors headers. The content hash is computed on first sight of
    the files (about a second per GB) and remembered afterwards.
    """
    p = resolve_model_path(path)
    if p.is_dir():
        return _hf_metadata(p)
    if is_gguf(p):
        return gguf_metadata(p)
    raise ModelLoadError(f"{p}: not a model: give a Hugging Face model folder or a .gguf file")


def content_hash(path: str | os.PathLike[str]) -> str:
    """The hash that ties adapters to their base: the GGUF file's content, or for a Hugging Face
    folder ``config.json`` plus the weight files."""
    p = resolve_model_path(path)
    if p.is_dir():
        layout = hf_layout(p)
        return combined_hash(p, (p / CONFIG_FILE, *layout.weight_files))
    if is_gguf(p):
        return file_hash(p)
    raise ModelLoadError(f"{p}: not a model: give a Hugging Face model folder or a .gguf file")


# --- Hugging Face folders ----------------------------------------------------------------------


@dataclass(frozen=True)
class HFLayout:
    """The files of a Hugging Face model folder that matter for loading."""

    folder: Path
    config: dict[str, Any]
    weight_files: tuple[Path, ...]


def hf_layout(folder: Path) -> HFLayout:
    """Check that ``folder`` holds a config, safetensors weights and a tokenizer; read the config."""
    config_path = folder / CONFIG_FILE
    if not config_path.is_file():
        raise ModelLoadError(f"{folder}: not a Hugging Face model folder (no {CONFIG_FILE})")
    try:
        config = read_json_object(config_path, str(config_path))
    except ValueError as exc:
        raise ModelLoadError(str(exc)) from None
    weights = _weight_files(folder)
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise ModelLoadError(f"{folder}: no tokenizer files (expected one of {', '.join(TOKENIZER_FILES)})")
    return HFLayout(folder, config, weights)


def _weight_files(folder: Path) -> tuple[Path, ...]:
    index_path = folder / WEIGHTS_INDEX_FILE
    if index_path.is_file():
        try:
            weight_map = json.loads(index_path.read_text(encoding="utf-8"))["weight_map"]
            names = sorted(set(weight_map.values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ModelLoadError(f"{index_path}: not a valid safetensors index ({exc!r})") from None
        files = tuple(folder / name for name in names)
        for file in files:
            if not file.is_file():
                raise ModelLoadError(f"{folder}: weight shard {file.name} listed in {WEIGHTS_INDEX_FILE} is missing")
        return files
    if (folder / WEIGHTS_FILE).is_file():
        return (folder / WEIGHTS_FILE,)
    if any(f.suffix in PICKLE_WEIGHT_SUFFIXES for f in folder.iterdir()):
        raise ModelLoadError(
            f"{folder}: only PyTorch pickle weights (.bin/.pt) found; Senior Intern loads safetensors only, "
            "so convert the model to safetensors"
        )
    raise ModelLoadError(f"{folder}: no weights (expected {WEIGHTS_FILE} or {WEIGHTS_INDEX_FILE})")


def read_safetensors_header(file: Path) -> dict[str, Any]:
    """The JSON header of a safetensors file (tensor name -> dtype, shape, data_offsets).

    Raises ``ModelLoadError`` when the file is truncated or corrupt: the header must parse and the
    file must be exactly as long as the header says.
    """
    size = file.stat().st_size
    problem = f"{file}: truncated or corrupt safetensors file"
    with open(file, "rb") as f:
        raw = f.read(8)
        n = int.from_bytes(raw, "little") if len(raw) == 8 else -1
        if n < 2 or n > min(size - 8, MAX_SAFETENSORS_HEADER):
            raise ModelLoadError(f"{problem} (bad header length); copy or download it again")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, ValueError):
            raise ModelLoadError(f"{problem} (its header is not valid JSON); copy or download it again") from None
    if not isinstance(header, dict):
        raise ModelLoadError(f"{problem} (its header is not a JSON object); copy or download it again")
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    try:
        data_end = max((int(v["data_offsets"][1]) for v in tensors.values()), default=0)
    except (KeyError, IndexError, TypeError, ValueError):
        raise ModelLoadError(f"{problem} (a tensor entry has no data offsets); copy or download it again") from None
    expected = 8 + n + data_end
    if expected != size:
        raise ModelLoadError(f"{problem}: it should be {expected} bytes but is {size}; copy or download it again")
    return tensors


def causal_lm_architecture(where: Path, model_type: str, architectures: list[str] | None) -> str:
    """The transformers causal-LM class for a config, or ``ModelLoadError`` when there is none."""
    from transformers import __version__ as transformers_version
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    if model_type not in CONFIG_MAPPING_NAMES:
        raise ModelLoadError(
            f"{where}: unsupported model_type {model_type!r} (transformers {transformers_version} does not "
            "know it; update transformers or choose another model)"
        )
    causal = set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())
    if architectures:
        for name in architectures:
            if name in causal:
                return name
        raise ModelLoadError(
            f"{where}: not a causal language model, so it cannot be fine-tuned to generate text "
            f"(architectures: {', '.join(architectures)})"
        )
    if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise ModelLoadError(
            f"{where}: not a causal language model, so it cannot be fine-tuned to generate text "
            f"(model_type: {model_type})"
        )
    return MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[model_type]


def _hf_metadata(folder: Path) -> ModelInfo:
    layout = hf_layout(folder)
    model_type = layout.config.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        raise ModelLoadError(f"{folder / CONFIG_FILE}: no model_type; this does not look like a transformers config")
    architectures = layout.config.get("architectures")
    if not isinstance(architectures, list):
        architectures = None
    architecture = causal_lm_architecture(folder, model_type, architectures)
    config = _auto_config(folder)
    text = config.get_text_config()
    counts: Counter[str] = Counter()
    for file in layout.weight_files:
        for entry in read_safetensors_header(file).values():
            counts[str(entry.get("dtype", "?"))] += prod(entry.get("shape", ()))
    stored = counts.most_common(1)[0][0] if counts else "F32"
    heads = int(text.num_attention_heads)
    return ModelInfo(
        path=folder,
        source_format="hf",
        architecture=architecture,
        model_type=model_type,
        parameter_count=sum(counts.values()),
        vocab_size=int(text.vocab_size),
        context_length=int(getattr(text, "max_position_embeddings", 0) or 0),
        hidden_size=int(text.hidden_size),
        num_layers=int(text.num_hidden_layers),
        num_attention_heads=heads,
        num_kv_heads=int(getattr(text, "num_key_value_heads", None) or heads),
        tie_word_embeddings=bool(getattr(config, "tie_word_embeddings", getattr(text, "tie_word_embeddings", False))),
        file_size=sum(f.stat().st_size for f in layout.weight_files),
        dtype=_TORCH_DTYPE_NAMES.get(stored, stored.lower()),
        content_hash=combined_hash(folder, (folder / CONFIG_FILE, *layout.weight_files)),
        has_chat_template=_hf_has_chat_template(folder),
    )


def _auto_config(folder: Path) -> Any:
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(folder, local_files_only=True)
    except MemoryError:
        raise
    except Exception as exc:  # transformers and huggingface_hub validation raise many types
        problem = f"transformers cannot read this config ({one_line(exc)})"
        raise ModelLoadError(f"{folder / CONFIG_FILE}: {problem}") from None


def _hf_has_chat_template(folder: Path) -> bool:
    if (folder / "chat_template.jinja").is_file() or (folder / "chat_template.json").is_file():
        return True
    try:
        tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(tokenizer_config, dict) and bool(tokenizer_config.get("chat_template"))


# --- GGUF files --------------------------------------------------------------------------------


def gguf_model_type(header: GGUFHeader) -> str:
    """The transformers model_type a GGUF file loads as, or ``ModelLoadError`` when unsupported."""
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    arch = header.architecture
    if not arch:
        raise ModelLoadError(f"{header.path}: the GGUF file has no general.architecture")
    model_type = _GGUF_MODEL_TYPES.get(arch, arch)
    supported = sorted(set(GGUF_SUPPORTED_ARCHITECTURES) - {"general", "tokenizer"})
    if arch not in supported and model_type not in supported:
        raise ModelLoadError(
            f"{header.path}: unsupported model_type {arch!r} in GGUF "
            f"(transformers loads GGUF for: {', '.join(supported)})"
        )
    return model_type


def gguf_metadata(path: Path, header: GGUFHeader | None = None) -> ModelInfo:
    """``ModelInfo`` of a GGUF file from its header (read here unless given)."""
    header = header or read_gguf_header(path)
    model_type = gguf_model_type(header)
    architecture = causal_lm_architecture(path, model_type, None)
    required = {
        "block_count": header.arch_field("block_count"),
        "embedding_length": header.arch_field("embedding_length"),
        "attention.head_count": header.arch_field("attention.head_count"),
    }
    missing = [f"{header.architecture}.{key}" for key, value in required.items() if value is None]
    if missing:
        raise ModelLoadError(f"{path}: the GGUF header lacks {', '.join(missing)}")
    heads = _largest(required["attention.head_count"])
    embedding = next((t for t in header.tensors if t.name == "token_embd.weight"), None)
    vocab = (
        header.array_lengths.get("tokenizer.ggml.tokens")
        or header.arch_field("vocab_size")
        or (embedding.shape[-1] if embedding else 0)
    )
    return ModelInfo(
        path=path,
        source_format="gguf",
        architecture=architecture,
        model_type=model_type,
        parameter_count=sum(t.n_elements for t in header.tensors),
        vocab_size=int(vocab),
        context_length=int(header.arch_field("context_length", 0)),
        hidden_size=int(required["embedding_length"]),
        num_layers=int(required["block_count"]),
        num_attention_heads=heads,
        num_kv_heads=_largest(header.arch_field("attention.head_count_kv", heads)),
        tie_word_embeddings=all(t.name != "output.weight" for t in header.tensors),
        file_size=header.file_size,
        dtype=_gguf_dtype(header),
        content_hash=file_hash(path),
        quantization=gguf_file_type(header),
        has_chat_template=bool(header.fields.get("tokenizer.chat_template")),
    )


def _largest(value: Any) -> int:
    """A head count, which some architectures store per layer (a list): the largest."""
    return int(max(value)) if isinstance(value, list) else int(value)


def _dominant_ggml_type(header: GGUFHeader) -> str:
    from gguf import GGMLQuantizationType

    counts: Counter[int] = Counter()
    for t in header.tensors:
        counts[t.ggml_type] += t.n_elements
    if not counts:
        return "F32"
    return GGMLQuantizationType(counts.most_common(1)[0][0]).name


def _gguf_dtype(header: GGUFHeader) -> str:
    name = _dominant_ggml_type(header)
    return _TORCH_DTYPE_NAMES.get(name, name.lower())


def gguf_file_type(header: GGUFHeader) -> str:
    """The file's quantisation as llama.cpp names it: ``"Q4_1"``, ``"Q4_K_M"``, ``"F16"``, ``"BF16"``."""
    from gguf import LlamaFileType

    value = header.fields.get("general.file_type")
    if isinstance(value, int):
        value &= ~LlamaFileType.GUESSED
        if value in LlamaFileType._value2member_map_:
            return LlamaFileType(value).name.removeprefix("MOSTLY_").removeprefix("ALL_")
    return _dominant_ggml_type(header)
