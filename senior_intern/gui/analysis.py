"""Work the Train page runs on a background thread: model details, dataset analysis, LR preview.

Each function may import torch and transformers (inside the function, never at module import)
and may take seconds; the page calls them through ``TaskRunner``. Also the torch-free helper
that tells a dropped model apart from a dropped dataset.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from senior_intern.config import TrainingConfig, TrainingJob

PREVIEW_SAMPLES = 3
_MODEL_WEIGHTS = ("*.safetensors", "*.bin", "*.gguf")


def is_model_path(path: str | Path) -> bool:
    """True for a ``.gguf`` file or a Hugging Face model folder (``config.json`` next to weights)."""
    p = Path(path)
    if p.is_file():
        return p.suffix.lower() == ".gguf"
    if p.is_dir() and (p / "config.json").is_file():
        return any(next(p.glob(pattern), None) is not None for pattern in _MODEL_WEIGHTS)
    return False


def model_details(path: str, base_quantization: str = "none") -> dict[str, str]:
    """Readable facts about a base model (architecture, parameters, vocabulary, context, size...)
    and how a run holds it (``models.holding``: compact blocks or dense, bytes in memory)."""
    from senior_intern.hardware.metrics import format_bytes
    from senior_intern.models import metadata
    from senior_intern.models.holding import base_holding, holding_rows

    info = metadata(path)
    facts = {
        "Architecture": f"{info.architecture} ({info.model_type})",
        "Parameters": info.parameters_label,
        "Layers": f"{info.num_layers} x hidden {info.hidden_size}, {info.num_attention_heads} heads ({info.num_kv_heads} KV)",
        "Vocabulary": f"{info.vocab_size:,}",
        "Context length": f"{info.context_length:,} tokens",
        "Size on disk": format_bytes(info.file_size),
        "Weights": info.quantization or info.dtype,
        "Chat template": "yes" if info.has_chat_template else "no",
    }
    for label, value in holding_rows(base_holding(path, base_quantization)):
        facts["\u2003" + label.strip() if label.startswith(" ") else label] = value  # an em space indents a part
    return {k: v for k, v in facts.items() if v}


def tokenizer_cached(model_path: str) -> bool:
    """True when the tokenizer of ``model_path`` is already loaded (analysis will be quick)."""
    from senior_intern.models.tokenizer import tokenizer_cached as cached

    return cached(model_path)


def load_tokenizer(model_path: str) -> Any:
    """The model's tokenizer, loaded once per path and kept (``models.load_tokenizer``)."""
    from senior_intern.models.tokenizer import load_tokenizer as load

    return load(model_path)


@dataclass(frozen=True)
class DatasetAnalysis:
    """What the Train page shows about a dataset for the current settings."""

    stats: Any  # senior_intern.data.DatasetStats of all samples
    previews: list[tuple[str, list[tuple[str, bool]]]]  # (source, [(text piece, trained)])
    train_samples: int
    validation_samples: int
    steps_per_epoch: int  # optimizer steps per epoch (after gradient accumulation)
    total_steps: int
    messages: list[str] = field(default_factory=list)


def analyze_dataset(job: TrainingJob, progress: Callable[[int, int], None] | None = None) -> DatasetAnalysis:
    """Load and tokenise ``job.dataset_path`` with the model's tokenizer; count samples and steps.

    Follows the engine: the validation file or split is held out, batches are packed or padded
    as configured, and the steps come from the run's own plan (``training.plan.plan_run``:
    gradient accumulation, epochs and the ``max_steps`` cap counted as a run counts them).
    """
    from senior_intern.data import dataset_stats, load_dataset, preview, split
    from senior_intern.training.plan import plan_run

    t = job.training
    tokenizer = load_tokenizer(job.base_model_path)
    loaded = load_dataset(job.dataset_path, tokenizer, job.data, t.max_seq_length, progress)
    stats = dataset_stats(loaded, max(1, t.batch_size), t.max_seq_length, t.packing, t.seed)
    if job.validation_path:
        train, validation = loaded.samples, load_dataset(job.validation_path, tokenizer, job.data, t.max_seq_length).samples
    else:
        train, validation = split(loaded.samples, job.validation_split, t.seed)
    # An optimizer step takes batch_size rows on each of the processes (the global batch).
    global_batch = max(1, t.batch_size) * max(1, t.processes)
    train_stats = dataset_stats(dataclasses.replace(loaded, samples=train), global_batch, t.max_seq_length, t.packing, t.seed)
    plan = plan_run(job, tokenizer, train, train_stats.batches_per_epoch)
    previews = [(s.source, preview(s, tokenizer)) for s in loaded.samples[:PREVIEW_SAMPLES]]
    return DatasetAnalysis(stats, previews, len(train), len(validation), plan.steps_per_epoch, plan.total_steps,
                           loaded.summary_lines())


def device_names() -> list[str]:
    """The devices torch sees here (``hardware.detect.available_device_names``), for validation."""
    from senior_intern.hardware.detect import available_device_names

    return available_device_names()


def estimate_job(job: TrainingJob) -> Any:
    """The engine's ``TrainingEstimate`` of ``job`` (steps, parameters, memory, time, disk)."""
    from senior_intern.training.estimate import estimate

    return estimate(job)


def schedule_preview(cfg: TrainingConfig, total_steps: int, points: int = 200) -> tuple[list[int], list[float]]:
    """The learning rate over the run: ([step], [lr]) at about ``points`` evenly spaced steps."""
    from senior_intern.training.optim import lr_at

    if total_steps < 1:
        return [], []
    stride = max(1, total_steps // points)
    steps = list(range(0, total_steps, stride))
    if steps[-1] != total_steps - 1:
        steps.append(total_steps - 1)
    return steps, [lr_at(s, cfg, total_steps) for s in steps]
