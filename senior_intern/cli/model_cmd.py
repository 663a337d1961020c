"""``senior-intern model info PATH``: what a base model is, read from its files (no weights loaded)."""

from __future__ import annotations

import argparse

from senior_intern.hardware.metrics import format_bytes
from senior_intern.models.holding import BaseHolding, holding_rows
from senior_intern.models.info import ModelInfo

BASE_QUANTIZATIONS = ("none", "int8", "int4", "auto")  # as models.loader.BASE_QUANTIZATIONS


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``model`` sub-command and its ``info`` action."""
    parser = subparsers.add_parser(
        "model",
        help="inspect a base model (a Hugging Face folder or a .gguf file)",
        description="Inspect base models without loading their weights.",
    )
    actions = parser.add_subparsers(dest="model_command", metavar="ACTION", required=True)
    info = actions.add_parser(
        "info",
        help="show architecture, size, vocabulary, context length and content hash",
        description="Show what a base model is: architecture, parameters, vocabulary, context, "
        "layers, size on disk, quantisation and the content hash adapters are tied to.",
    )
    info.add_argument("path", metavar="PATH", help="a Hugging Face model folder or a .gguf file")
    info.add_argument("--base-quantization", choices=BASE_QUANTIZATIONS, default="none",
                      help="how a Hugging Face folder's linear weights would be held (GGUF files stay in their blocks)")
    info.set_defaults(func=run_info)


def info_lines(info: ModelInfo, holding: BaseHolding | None = None) -> list[str]:
    """``ModelInfo`` (and how the base is held, when given) as aligned ``label: value`` lines."""
    rows = [
        ("Model", str(info.path)),
        ("Format", "GGUF" if info.source_format == "gguf" else "Hugging Face folder"),
        ("Architecture", f"{info.architecture} ({info.model_type})"),
        ("Parameters", f"{info.parameters_label} ({info.parameter_count:,})"),
        ("Vocabulary", f"{info.vocab_size} tokens"),
        ("Context", f"{info.context_length} tokens"),
        ("Layers", str(info.num_layers)),
        ("Hidden size", str(info.hidden_size)),
        ("Attention heads", f"{info.num_attention_heads} ({info.num_kv_heads} key/value)"),
        ("Tied embeddings", "yes" if info.tie_word_embeddings else "no"),
        ("Size on disk", format_bytes(info.file_size)),
        ("Weights", info.dtype),
        ("Quantization", info.quantization or "none"),
        ("Chat template", "yes" if info.has_chat_template else "no"),
        ("Hash", info.content_hash[:16]),
    ]
    if holding is not None:
        rows += holding_rows(holding)
    width = max(len(label) for label, _ in rows) + 1
    return [f"{label + ':':<{width}} {value}" for label, value in rows]


def run_info(args: argparse.Namespace) -> int:
    """Print the model's facts; bad input raises ``ValueError`` (exit 2 through the CLI)."""
    from senior_intern.models import metadata
    from senior_intern.models.holding import base_holding

    for line in info_lines(metadata(args.path), base_holding(args.path, args.base_quantization)):
        print(line)
    return 0
