"""Merge a LoRA adapter into its base model and save a standard Hugging Face folder.

The merge runs on a float32 copy of the base (a GGUF base is dequantised by transformers while
loading; quantised Hugging Face checkpoints are refused), adds ``scale * B @ A`` to every adapted
weight, checks each merged weight for NaN/Inf and refuses tied weights (the step is
``lora/delta.py``'s, the same one ``LoraModel.merge`` uses), and writes safetensors shards, the config and the
tokenizer to a temporary folder that is renamed into place only when everything succeeded.

``read_peft_adapter`` is shared with the GGUF exporter: it reads a PEFT adapter folder
(``adapter_config.json`` + ``adapter_model.safetensors``) and resolves each adapted layer's A, B
and alpha (``rank_pattern``, ``alpha_pattern`` and rsLoRA included), refusing settings that a
plain low-rank update cannot express.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from senior_intern import layout
from senior_intern.lora.delta import lora_delta, lora_scaling, merged_tensor, refuse_tied, tied_weights

ADAPTER_CONFIG = layout.ADAPTER_CONFIG_FILE
ADAPTER_WEIGHTS = layout.ADAPTER_WEIGHTS_FILE
MERGE_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}

_PEFT_PREFIX = "base_model.model."
_A_SUFFIX = ".lora_A.weight"
_B_SUFFIX = ".lora_B.weight"


@dataclass(frozen=True)
class LoraModuleWeights:
    """The low-rank update of one adapted linear layer.

    ``module`` is the layer's dotted name inside the causal-LM model
    (``model.layers.0.self_attn.q_proj``). ``a`` is LoRA A ``[r, in]`` and ``b`` is LoRA B
    ``[out, r]``, both float32 on the CPU. ``alpha`` is this layer's alpha after ``alpha_pattern``.
    """

    module: str
    a: torch.Tensor
    b: torch.Tensor
    alpha: float
    use_rslora: bool

    @property
    def rank(self) -> int:
        """The layer's rank r (rows of A; ``rank_pattern`` may make it differ per layer)."""
        return int(self.a.shape[0])

    @property
    def scale(self) -> float:
        """PEFT's factor on ``B @ A``: ``alpha / r``, or ``alpha / sqrt(r)`` with rsLoRA."""
        return lora_scaling(self.alpha, self.rank, self.use_rslora)

    def delta(self) -> torch.Tensor:
        """The weight update ``scale * B @ A``, shape ``[out, in]``, float32."""
        return lora_delta(self.b, self.a, self.scale)


@dataclass(frozen=True)
class PeftLoraAdapter:
    """A checked PEFT LoRA adapter folder: its raw config and one entry per adapted layer."""

    path: Path
    config: dict[str, Any]
    modules: tuple[LoraModuleWeights, ...]

    @property
    def alpha(self) -> float:
        """The adapter-wide ``lora_alpha``."""
        return float(self.config["lora_alpha"])

    @property
    def rank(self) -> int:
        """The adapter-wide rank ``r``."""
        return int(self.config["r"])

    @property
    def use_rslora(self) -> bool:
        """Whether the scale is ``alpha / sqrt(r)`` (rank-stabilised LoRA) instead of ``alpha / r``."""
        return bool(self.config.get("use_rslora", False))


def read_peft_adapter(adapter_dir: str | Path) -> PeftLoraAdapter:
    """Read and check a PEFT LoRA adapter folder.

    Raises FileNotFoundError when the folder, its ``adapter_config.json`` or its
    ``adapter_model.safetensors`` is missing, and ValueError for anything a plain
    ``W + scale * B @ A`` cannot express: a non-LoRA PEFT type, DoRA, trained biases,
    fully trained extra modules, Conv1D (``fan_in_fan_out``) layers, embedding LoRA,
    or unpaired / mis-shaped A and B tensors.
    """
    from safetensors.torch import load_file

    folder = Path(adapter_dir)
    config_path, weights_path = folder / ADAPTER_CONFIG, folder / ADAPTER_WEIGHTS
    if not folder.is_dir():
        raise FileNotFoundError(f"Adapter folder not found: {folder}")
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path} is missing: an adapter folder needs {ADAPTER_CONFIG}")
    if not weights_path.is_file():
        raise FileNotFoundError(
            f"{weights_path} is missing: only safetensors adapters are read (pickled .bin files are never loaded)"
        )
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{config_path} is not valid JSON: {exc}") from exc
    _check_config(config, config_path)

    tensors = load_file(str(weights_path), device="cpu")
    pairs = _pair_tensors(tensors, weights_path)
    alpha_pattern = config.get("alpha_pattern") or {}
    modules = tuple(
        LoraModuleWeights(
            module=name,
            a=a.to(torch.float32),
            b=b.to(torch.float32),
            alpha=float(_pattern_value(alpha_pattern, name, config["lora_alpha"])),
            use_rslora=bool(config.get("use_rslora", False)),
        )
        for name, (a, b) in sorted(pairs.items())
    )
    return PeftLoraAdapter(path=folder, config=config, modules=modules)


def _check_config(config: dict[str, Any], path: Path) -> None:
    """Refuse adapter settings that are not a plain low-rank update (ValueError naming the key)."""
    if config.get("peft_type") != "LORA":
        raise ValueError(f"{path}: peft_type is {config.get('peft_type')!r}; only LORA adapters can be exported")
    for key in ("r", "lora_alpha"):
        if not isinstance(config.get(key), (int, float)) or isinstance(config.get(key), bool):
            raise ValueError(f"{path}: '{key}' must be a number, got {config.get(key)!r}")
    if config.get("use_dora"):
        raise ValueError(
            f"{path}: use_dora is true. DoRA rescales each weight column by a learned magnitude, which "
            "is not a low-rank update; it cannot be exported. Train without DoRA to export or merge."
        )
    if config.get("bias", "none") != "none" or config.get("lora_bias"):
        raise ValueError(
            f"{path}: the adapter trains biases (bias={config.get('bias')!r}, lora_bias="
            f"{config.get('lora_bias', False)!r}); only LoRA A/B weights can be exported. "
            "Train with bias 'none' to export or merge."
        )
    if config.get("modules_to_save") or config.get("trainable_token_indices"):
        raise ValueError(
            f"{path}: the adapter also saves fully trained modules (modules_to_save / trainable_token_indices); "
            "only LoRA A/B weights can be exported or merged."
        )
    if config.get("fan_in_fan_out"):
        raise ValueError(f"{path}: fan_in_fan_out is true (Conv1D layers); only nn.Linear layers are supported")


def _pair_tensors(tensors: dict[str, torch.Tensor], path: Path) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Group PEFT keys into ``{module: (A [r, in], B [out, r])}``, refusing anything else."""
    halves: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        for suffix, side in ((_A_SUFFIX, "a"), (_B_SUFFIX, "b")):
            if key.startswith(_PEFT_PREFIX) and key.endswith(suffix):
                halves.setdefault(key[len(_PEFT_PREFIX) : -len(suffix)], {})[side] = tensor
                break
        else:
            if "lora_embedding" in key:
                hint = " (LoRA on embeddings is not supported)"
            elif "lora_magnitude_vector" in key:
                hint = " (a DoRA magnitude)"
            else:
                hint = " (a full layer weight, e.g. saved embeddings: save with save_embedding_layers=False)"
            raise ValueError(f"{path}: unexpected tensor '{key}'{hint}; only LoRA A/B weights can be exported or merged")
    if not halves:
        raise ValueError(f"{path}: no LoRA tensors found")
    pairs = {}
    for module, sides in halves.items():
        if set(sides) != {"a", "b"}:
            raise ValueError(f"{path}: '{module}' has lora_{'A' if 'a' in sides else 'B'} but not its partner")
        a, b = sides["a"], sides["b"]
        if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[1]:
            raise ValueError(
                f"{path}: '{module}' has mismatched shapes A {tuple(a.shape)} and B {tuple(b.shape)} "
                "(expected A [r, in] and B [out, r])"
            )
        pairs[module] = (a, b)
    return pairs


def _pattern_value(patterns: dict[str, Any], module: str, default: Any) -> Any:
    """PEFT's per-module override: the first key matching a dotted suffix of ``module`` (as a regex)."""
    for key, value in patterns.items():
        if re.fullmatch(rf"(.*\.)?({key})", module):
            return value
    return default


def merge_adapter(
    adapter_dir: str | Path, base_model_path: str | Path, out_dir: str | Path, dtype: str = "float32",
    on_progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Merge an adapter into its base model and save the result as a Hugging Face folder.

    ``base_model_path`` is a Hugging Face folder or a ``.gguf`` file (dequantised on load).
    Every adapted weight ``W [out, in]`` becomes ``W + scale * B @ A`` computed in float32,
    cast to ``dtype`` (``float32``, ``float16`` or ``bfloat16``) and checked for NaN/Inf before
    anything is written. ``out_dir`` must not exist yet (an empty folder is accepted); the
    folder appears only once it is complete. Returns ``out_dir``.

    ``on_progress(done, total)`` counts the steps: the base loaded, each layer merged, then the
    save starting; an exception it raises (a cancel) stops the merge before anything is written.
    """
    if dtype not in MERGE_DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(MERGE_DTYPES)}, got {dtype!r}")
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"{out} already exists; choose a new output folder or delete it first")
    adapter = read_peft_adapter(adapter_dir)
    total = len(adapter.modules) + 2
    report = on_progress or (lambda done, total: None)
    report(0, total)
    model, tokenizer = _load_float_base(Path(base_model_path))
    report(1, total)
    _merge_into(model, adapter, MERGE_DTYPES[dtype], lambda done: report(1 + done, total))
    model.to(MERGE_DTYPES[dtype])
    report(total - 1, total)

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        model.save_pretrained(staging, max_shard_size="2GB")
        tokenizer.save_pretrained(staging)
        if out.exists():
            out.rmdir()
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def _load_float_base(path: Path):
    """Load a base model in float32 with its tokenizer, from a Hugging Face folder or a GGUF file."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if path.is_file() and path.suffix.lower() == ".gguf":
        folder, source, model_extra = path.parent, {"gguf_file": path.name}, {}
        try:  # transformers 5 may keep GGUF weights packed; ask for a dense float model
            from transformers import GgufConfig

            model_extra["quantization_config"] = GgufConfig(dequantize=True)
        except ImportError:  # older transformers always dequantise GGUF weights on load
            pass
    elif path.is_dir():
        config_path = path / "config.json"
        if not config_path.is_file():
            raise FileNotFoundError(f"{config_path} is missing: the base model folder must be a Hugging Face model")
        if "quantization_config" in json.loads(config_path.read_text(encoding="utf-8")):
            raise ValueError(
                f"{path} holds a quantised checkpoint (quantization_config in config.json); "
                "merge onto the float (unquantised) base model instead"
            )
        folder, source, model_extra = path, {}, {}
    else:
        raise FileNotFoundError(f"Base model not found: {path} (expected a Hugging Face folder or a .gguf file)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, **source)
    except (OSError, ValueError) as exc:
        raise ValueError(
            f"{path}: the base model's tokenizer could not be loaded, and the merged folder needs it "
            f"(add tokenizer.json / tokenizer_config.json to the base folder): {exc}"
        ) from exc
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, **source, **model_extra)
    if getattr(model, "hf_quantizer", None) is not None:
        raise ValueError(f"{path} loaded as a quantised model; merge onto the float base model instead")
    return model.eval(), tokenizer


@torch.no_grad()
def _merge_into(model: torch.nn.Module, adapter: PeftLoraAdapter, dtype: torch.dtype,
                progress: Callable[[int], None] | None = None) -> None:
    """Add each layer's ``scale * B @ A`` to its weight in place, checking the result in ``dtype``.

    Every layer is looked up and checked (type, shape, tied weights) before any weight changes;
    the delta and its NaN/Inf check are ``lora/delta.py``'s, shared with ``LoraBase.merge``.
    """
    context = f"{adapter.path}: "
    layers: dict[str, torch.nn.Linear] = {}
    for lora in adapter.modules:
        try:
            layer = model.get_submodule(lora.module)
        except AttributeError as exc:
            raise ValueError(
                f"{adapter.path}: the base model has no layer '{lora.module}' (adapter trained on another model?)"
            ) from exc
        if not isinstance(layer, torch.nn.Linear) or not layer.weight.dtype.is_floating_point:
            raise ValueError(
                f"{adapter.path}: '{lora.module}' is a {type(layer).__name__}; "
                "only Linear layers with float weights can be merged into"
            )
        expected = (int(lora.b.shape[0]), int(lora.a.shape[1]))
        if tuple(layer.weight.shape) != expected:
            raise ValueError(
                f"{adapter.path}: '{lora.module}' expects a weight of shape {expected} but the base has "
                f"{tuple(layer.weight.shape)} (adapter trained on another model?)"
            )
        layers[lora.module] = layer
    refuse_tied(tied_weights(model, {name: layer.weight for name, layer in layers.items()}), context)
    for done, lora in enumerate(adapter.modules, start=1):
        weight = layers[lora.module].weight
        weight.copy_(merged_tensor(lora.module, weight, lora.delta(), dtype, context))
        if progress is not None:
            progress(done)


def gguf_convert_hint(out_dir: str | Path) -> str:
    """The llama.cpp command that converts a merged folder into a GGUF file next to it (f16)."""
    folder = Path(out_dir)
    target = folder.parent / f"{folder.name}.gguf"
    return f"python convert_hf_to_gguf.py {shlex.quote(str(folder))} --outfile {shlex.quote(str(target))} --outtype f16"
