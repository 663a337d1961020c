"""What is known about a base model (``ModelInfo``) and the error every loading problem raises."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


class ModelLoadError(ValueError):
    """A base model cannot be read or loaded.

    The message is one line that names the path and says what is wrong with it, so the CLI and
    the GUI can show it as it is.
    """


@dataclass(frozen=True)
class ModelInfo:
    """Facts about a base model, read from its files (``metadata``) or after loading it.

    ``content_hash`` ties adapters to the exact base they were trained on: it changes when any
    weight byte (or, for a Hugging Face folder, ``config.json``) changes.
    """

    path: Path
    """The model as the user named it: a Hugging Face folder or a ``.gguf`` file (absolute)."""
    source_format: str
    """``"hf"`` for a Hugging Face folder, ``"gguf"`` for a GGUF file."""
    architecture: str
    """The transformers class that runs it, e.g. ``"LlamaForCausalLM"``."""
    model_type: str
    """The transformers model type, e.g. ``"llama"``."""
    parameter_count: int
    """Number of weights (tied embeddings counted once)."""
    vocab_size: int
    context_length: int
    """Longest sequence the model was built for (``max_position_embeddings``)."""
    hidden_size: int
    num_layers: int
    num_attention_heads: int
    num_kv_heads: int
    tie_word_embeddings: bool
    file_size: int
    """Bytes on disk of the weight files (the GGUF file, or the safetensors files)."""
    dtype: str
    """Weight type: as stored for ``metadata`` (``"bfloat16"``, ``"q4_1"``), as loaded after ``load_base_model``."""
    content_hash: str
    """blake2b hex digest of the weights (and ``config.json`` for a folder)."""
    load_seconds: float = 0.0
    """Wall time of ``load_base_model``; 0 for ``metadata``."""
    quantization: str | None = None
    """GGUF file type such as ``"Q4_1"`` or ``"F16"``; None for a Hugging Face folder."""
    has_chat_template: bool = False
    base_held: str = ""
    """How ``load_base_model`` holds the frozen linear weights: ``"gguf"`` (the GGUF file's own
    blocks, dequantised per layer), ``"int8"`` / ``"int4"`` (quantised at load), ``"float"``
    (dense in ``dtype``); empty for ``metadata``."""

    @property
    def parameters_label(self) -> str:
        """The parameter count for people: ``"134.5M"``, ``"1.24B"``."""
        return format_parameter_count(self.parameter_count)


def format_parameter_count(n: int) -> str:
    """``950`` -> ``"950"``, ``12_300`` -> ``"12.3K"``, ``134_515_008`` -> ``"134.5M"``, ``1.24e9`` -> ``"1.24B"``."""
    if n < 1_000:
        return str(n)
    if n < 1_000_000:
        return f"{n / 1_000:.1f}K"
    if n < 1_000_000_000:
        return f"{n / 1_000_000:.1f}M"
    return f"{n / 1_000_000_000:.2f}B"


def require_all_weights(loading_info: dict, where: object) -> None:
    """Raise ``ModelLoadError`` when ``from_pretrained(..., output_loading_info=True)`` reports
    parameters that the files did not provide (transformers would leave them random)."""
    missing = sorted(loading_info.get("missing_keys") or ())
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise ModelLoadError(
            f"{where}: the weight files lack {len(missing)} tensor(s) the model needs ({shown}); "
            "the weights do not belong to this config"
        )


def one_line(exc: BaseException) -> str:
    """An exception's message as one line: its first line (with the next one when the first ends
    in a colon), or the exception's type name when it has no message."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    if lines[0].endswith(":") and len(lines) > 1:
        return f"{lines[0]} {lines[1]}"
    return lines[0]
