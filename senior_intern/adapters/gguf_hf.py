"""Write a Hugging Face Llama, Mistral, Qwen2 or Qwen3 model as a GGUF file that llama.cpp loads.

The header and tensor names follow llama.cpp's ``convert_hf_to_gguf.py`` for these families
(facts from its published format, no code of its own): ``<arch>.*`` hyper-parameters from
``config.json``; tensor names from the ``gguf`` package's name map; Llama's (and Mistral's) q
and k rows reordered for llama.cpp's rotary layout (``llama_qk_permute``); no ``output.weight``
when the embeddings are tied; norms and biases in F32, matrices in the chosen type.

The tokenizer comes from a GGUF file of the same family (``tokenizer.*`` fields copied) or from
the folder's ``tokenizer.json`` when it is GPT-2's byte-level BPE (``tokenizer.ggml.model = gpt2``,
``pre = gpt-2``); other tokenizers, whose pre-tokenizer llama.cpp names by a hash of their output,
are refused with the reason (give a GGUF of the same model to copy the tokenizer from). Rope scaling, which needs llama.cpp's extra
``rope_freqs`` tensor or YaRN fields, and other architectures are refused too.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import gguf
import numpy as np

from senior_intern.adapters.gguf import rows_for_llama_cpp

Q = gguf.GGMLQuantizationType
# Hugging Face model_type -> GGUF architecture for the families this writer knows.
HF_TO_GGUF_ARCH = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2", "qwen3": "qwen3"}
_ARCH_ENUM = {name: arch for arch, name in gguf.MODEL_ARCH_NAMES.items()}
# gguf.quants can encode these for the matrices (norms and biases stay F32).
MATRIX_TYPES = {"f32": Q.F32, "f16": Q.F16, "bf16": Q.BF16, "q8_0": Q.Q8_0, "q4_0": Q.Q4_0}


class HfGgufError(ValueError):
    """The Hugging Face model cannot be written as GGUF by this writer; the message says why."""


def check_hf_config(config: Mapping, where: str = "config.json") -> str:
    """The GGUF architecture for ``config`` (a config.json dict), or HfGgufError naming the reason."""
    model_type = config.get("model_type", "")
    arch = HF_TO_GGUF_ARCH.get(model_type)
    if arch is None:
        raise HfGgufError(
            f"{where}: model_type '{model_type}' cannot be written as GGUF here (supported: "
            f"{', '.join(sorted(HF_TO_GGUF_ARCH))}); convert it with llama.cpp's convert_hf_to_gguf.py"
        )
    if config.get("rope_scaling"):
        raise HfGgufError(
            f"{where}: rope_scaling {config['rope_scaling']!r} is not written by this GGUF writer; "
            "convert the model with llama.cpp's convert_hf_to_gguf.py"
        )
    return arch


def _add_hparams(writer: gguf.GGUFWriter, config: Mapping, arch: str) -> None:
    heads = int(config["num_attention_heads"])
    hidden = int(config["hidden_size"])
    head_dim = int(config.get("head_dim") or hidden // heads)
    writer.add_context_length(int(config.get("max_position_embeddings", 2048)))
    writer.add_embedding_length(hidden)
    writer.add_block_count(int(config["num_hidden_layers"]))
    writer.add_feed_forward_length(int(config["intermediate_size"]))
    writer.add_head_count(heads)
    writer.add_head_count_kv(int(config.get("num_key_value_heads") or heads))
    writer.add_rope_dimension_count(head_dim)
    if head_dim != hidden // heads or arch == "qwen3":
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    writer.add_rope_freq_base(float(config.get("rope_theta", 10000.0)))
    writer.add_layer_norm_rms_eps(float(config.get("rms_norm_eps", 1e-6)))
    writer.add_vocab_size(int(config["vocab_size"]))


def gguf_tensors(
    state_dict: Mapping[str, np.ndarray], config: Mapping, arch: str,
) -> Iterable[tuple[str, np.ndarray]]:
    """(GGUF name, float32 array) for every weight of ``state_dict`` (HF names), permuted for Llama.

    Tied ``lm_head.weight`` is left out (llama.cpp reuses ``token_embd``); rotary caches are
    skipped; a tensor with no GGUF name raises HfGgufError naming it.
    """
    blocks = int(config["num_hidden_layers"])
    heads = int(config["num_attention_heads"])
    heads_kv = int(config.get("num_key_value_heads") or heads)
    name_map = gguf.get_tensor_name_map(_ARCH_ENUM[arch], blocks)
    tied = bool(config.get("tie_word_embeddings", False))
    for key, value in state_dict.items():
        if key.endswith("rotary_emb.inv_freq") or (tied and key == "lm_head.weight"):
            continue
        name = name_map.get_name(key, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise HfGgufError(f"weight '{key}' has no GGUF tensor name for a '{arch}' model")
        data = np.asarray(value, dtype=np.float32)
        data = rows_for_llama_cpp(data, name_map.get_type(key, try_suffixes=(".weight", ".bias")), arch, heads, heads_kv)
        yield name, data


def _encode(data: np.ndarray, matrix_type: Q) -> tuple[np.ndarray, Q]:
    if data.ndim < 2 or matrix_type == Q.F32:
        return data.astype(np.float32), Q.F32
    try:
        return gguf.quants.quantize(data, matrix_type), matrix_type
    except gguf.QuantError:  # rows that do not split into the type's blocks
        return gguf.quants.quantize(data, Q.F16), Q.F16


def copy_tokenizer_fields(writer: gguf.GGUFWriter, source_gguf: str | Path) -> None:
    """Copy every ``tokenizer.*`` field of ``source_gguf`` into ``writer``, with its value types."""
    reader = gguf.GGUFReader(source_gguf)
    found = False
    for name, fld in reader.fields.items():
        if not name.startswith("tokenizer.") or not fld.types:
            continue
        found = True
        vtype = fld.types[0]
        sub_type = fld.types[-1] if vtype == gguf.GGUFValueType.ARRAY and len(fld.types) > 1 else None
        writer.add_key_value(name, fld.contents(), vtype, sub_type=sub_type)
    if not found:
        raise HfGgufError(f"{source_gguf} has no tokenizer fields to copy")


def _is_gpt2_byte_level(pre_tokenizer: object) -> bool:
    """True for GPT-2's pre-tokenizer: ByteLevel with its regex and no prefix space (llama.cpp's ``gpt-2``)."""
    return (isinstance(pre_tokenizer, dict) and pre_tokenizer.get("type") == "ByteLevel"
            and pre_tokenizer.get("use_regex", True) and not pre_tokenizer.get("add_prefix_space", False))


def add_bpe_tokenizer(writer: gguf.GGUFWriter, folder: Path, config: Mapping) -> None:
    """``tokenizer.*`` fields from a GPT-2 style byte-level BPE ``tokenizer.json`` in ``folder``.

    Tokens, types (added tokens: CONTROL when special, else USER_DEFINED), merges, the special
    token ids and chat template (``gguf.SpecialVocab`` reads tokenizer_config.json). Other
    tokenizer kinds and pre-tokenizers are refused, naming the file.
    """
    path = folder / "tokenizer.json"
    if not path.is_file():
        raise HfGgufError(f"{path} is missing: a GGUF model needs the tokenizer (or give a GGUF to copy it from)")
    spec = json.loads(path.read_text(encoding="utf-8"))
    model = spec.get("model") or {}
    if model.get("type") != "BPE" or not _is_gpt2_byte_level(spec.get("pre_tokenizer")):
        raise HfGgufError(
            f"{path}: only GPT-2 style byte-level BPE tokenizers are converted here (this one is a "
            f"{model.get('type')!r} with pre-tokenizer {(spec.get('pre_tokenizer') or {}).get('type')!r}); "
            "give a GGUF of the same model to copy the tokenizer from"
        )
    vocab: dict[str, int] = dict(model["vocab"])
    added = spec.get("added_tokens", [])
    for token in added:
        vocab[token["content"]] = int(token["id"])
    size = max(int(config["vocab_size"]), max(vocab.values()) + 1)
    tokens = [f"[PAD{i}]" for i in range(size)]
    types = [gguf.TokenType.UNUSED] * size
    for text, index in vocab.items():
        tokens[index] = text
        types[index] = gguf.TokenType.NORMAL
    for token in added:
        types[int(token["id"])] = gguf.TokenType.CONTROL if token.get("special") else gguf.TokenType.USER_DEFINED
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")  # llama.cpp's name for GPT-2's regex (not "gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])])
    gguf.SpecialVocab(folder, load_merges=False, n_vocab=size).add_to_gguf(writer, quiet=True)


def write_hf_gguf(
    out_path: str | Path,
    config: Mapping,
    state_dict: Mapping[str, np.ndarray],
    *,
    matrix_type: str = "f16",
    tokenizer_from: str | Path | None = None,
    hf_folder: str | Path | None = None,
    name: str = "",
    on_progress: Callable[[int, int, str], None] | None = None,
) -> dict[str, str]:
    """Write ``state_dict`` (HF names -> arrays) with ``config`` as a GGUF model at ``out_path``.

    The tokenizer is copied from ``tokenizer_from`` (a GGUF) or converted from ``hf_folder``'s
    ``tokenizer.json``. Returns GGUF tensor name -> type written. The caller writes to a
    temporary name and renames (see ``export_merged_gguf``).
    """
    arch = check_hf_config(config)
    if matrix_type not in MATRIX_TYPES:
        raise HfGgufError(f"type must be one of {', '.join(MATRIX_TYPES)}, got {matrix_type!r}")
    writer = gguf.GGUFWriter(str(out_path), arch)
    writer.add_type(gguf.GGUFType.MODEL)
    if name:
        writer.add_name(name)
    _add_hparams(writer, config, arch)
    if tokenizer_from is not None:
        copy_tokenizer_fields(writer, tokenizer_from)
    elif hf_folder is not None:
        add_bpe_tokenizer(writer, Path(hf_folder), config)
    else:
        raise HfGgufError("a GGUF model needs a tokenizer: give tokenizer_from (a GGUF) or hf_folder")
    written: dict[str, str] = {}
    total = len(state_dict)
    for done, (tensor_name, data) in enumerate(gguf_tensors(state_dict, config, arch), start=1):
        encoded, used = _encode(data, MATRIX_TYPES[matrix_type])
        writer.add_tensor(tensor_name, encoded, raw_dtype=used)
        written[tensor_name] = used.name
        if on_progress is not None:
            on_progress(done, total, tensor_name)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return written
