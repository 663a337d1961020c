"""Fixtures for engine tests: a tiny Llama saved as a Hugging Face folder and a small dataset."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from senior_intern.config import TrainingJob
from tests.conftest import make_tiny_llama, make_tiny_tokenizer


def write_tiny_model(folder: Path) -> Path:
    """Save a tiny random Llama and the tiny tokenizer as a Hugging Face folder."""
    folder.mkdir(parents=True, exist_ok=True)
    make_tiny_llama(seed=1).save_pretrained(folder)
    make_tiny_tokenizer().save_pretrained(folder)
    return folder


def write_dataset(path: Path, n: int = 48) -> Path:
    """A learnable prompt/completion dataset: 'add a b' -> the sum, in words the tokenizer knows."""
    words = ["def", "add", "return", "class", "Point", "print", "import", "hello", "world", "self"]
    with path.open("w") as fh:
        for i in range(n):
            a, b = words[i % len(words)], words[(i * 3 + 1) % len(words)]
            fh.write(json.dumps({"prompt": f"{a} {b} ->", "completion": f" {b} {a} {b}"}) + "\n")
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama HF folder shared by the session (read-only)."""
    return write_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture
def tiny_job(tmp_path: Path, tiny_model_dir: Path) -> TrainingJob:
    """A fast job on the tiny model: 2 epochs, eval and save every 2 steps, CPU, float32."""
    job = TrainingJob(
        name="tiny",
        base_model_path=str(tiny_model_dir),
        dataset_path=str(write_dataset(tmp_path / "data.jsonl")),
        output_dir=str(tmp_path / "runs"),
        adapters_dir=str(tmp_path / "adapters"),
        validation_split=0.25,
    )
    t = job.training
    t.epochs, t.batch_size, t.max_seq_length, t.learning_rate = 2, 4, 64, 5e-3
    t.warmup_steps, t.eval_every, t.save_every, t.device, t.dtype = 2, 2, 2, "cpu", "float32"
    t.early_stopping_patience, t.packing = 0, False
    job.lora.rank, job.lora.alpha = 4, 8.0
    return job
