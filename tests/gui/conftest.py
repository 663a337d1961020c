"""Fixtures for the GUI tests: temp settings, a tiny model folder, datasets, a main window.

Dialogs never block: tests replace the QFileDialog / QMessageBox static methods they need with
``monkeypatch``; ``messages`` records every warning/information box instead of showing it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PySide6.QtWidgets import QMessageBox

from senior_intern.config import TrainingJob
from senior_intern.gui.settings import AppSettings
from tests.conftest import make_tiny_llama, make_tiny_tokenizer

WORDS = ["def", "add", "return", "class", "Point", "print", "import", "hello", "world", "self"]


def write_tiny_model(folder: Path) -> Path:
    """A tiny random Llama and the tiny tokenizer saved as a Hugging Face folder."""
    folder.mkdir(parents=True, exist_ok=True)
    make_tiny_llama(seed=1).save_pretrained(folder)
    make_tiny_tokenizer().save_pretrained(folder)
    return folder


def write_dataset(path: Path, n: int = 48) -> Path:
    """A prompt/completion JSONL dataset in words the tiny tokenizer knows."""
    with path.open("w", encoding="utf-8") as fh:
        for i in range(n):
            a, b = WORDS[i % len(WORDS)], WORDS[(i * 3 + 1) % len(WORDS)]
            fh.write(json.dumps({"prompt": f"{a} {b} ->", "completion": f" {b} {a} {b}"}) + "\n")
    return path


def write_code_folder(folder: Path) -> Path:
    """A small folder of Python files."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(4):
        (folder / f"module_{i}.py").write_text(
            f"import os\n\n\ndef add_{i}(a, b):\n    return a + b + {i}\n\n\nclass Point{i}:\n    def __init__(self, x, y):\n"
            "        self.x = x\n        self.y = y\n", encoding="utf-8")
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama HF folder shared by the session (read-only)."""
    return write_tiny_model(tmp_path_factory.mktemp("gui-tiny-model"))


@pytest.fixture
def dataset_file(tmp_path: Path) -> Path:
    """A 48-record prompt/completion dataset."""
    return write_dataset(tmp_path / "data.jsonl")


@pytest.fixture
def tiny_job(tmp_path: Path, tiny_model_dir: Path, dataset_file: Path) -> TrainingJob:
    """A job that trains in seconds on the tiny model (CPU, float32, short sequences)."""
    job = TrainingJob(
        name="tiny",
        base_model_path=str(tiny_model_dir),
        dataset_path=str(dataset_file),
        output_dir=str(tmp_path / "runs"),
        adapters_dir=str(tmp_path / "adapters"),
        validation_split=0.25,
    )
    t = job.training
    t.epochs, t.batch_size, t.max_seq_length, t.learning_rate = 2, 4, 64, 5e-3
    t.warmup_steps, t.eval_every, t.save_every, t.device, t.dtype = 2, 2, 2, "cpu", "float32"
    t.early_stopping_patience, t.packing = 0, False
    job.lora.rank, job.lora.alpha = 4, 8.0
    job.data.window_overlap = 16
    return job


@pytest.fixture
def settings(tmp_path: Path) -> AppSettings:
    """Settings in a temp INI file (never the user's)."""
    return AppSettings(tmp_path / "settings" / "gui.ini")


class MessageLog(list):
    """Message boxes that would have been shown: (kind, title, text)."""

    def texts(self) -> str:
        return "\n".join(f"{kind}: {title}: {text}" for kind, title, text in self)


@pytest.fixture
def messages(monkeypatch: pytest.MonkeyPatch) -> MessageLog:
    """Record QMessageBox.warning/information/critical instead of showing them."""
    log = MessageLog()
    for kind in ("warning", "information", "critical"):
        def fake(parent, title, text, *args, _kind=kind, **kwargs):
            log.append((_kind, title, text))
            return QMessageBox.StandardButton.Ok
        monkeypatch.setattr(QMessageBox, kind, staticmethod(fake))
    return log


@pytest.fixture
def window(qtbot, settings: AppSettings, tiny_job: TrainingJob, messages: MessageLog):
    """The main window on the tiny job (so no test loads the demo model by accident)."""
    from senior_intern.gui.main_window import MainWindow

    settings.set_last_job(tiny_job)
    win = MainWindow(settings)
    qtbot.addWidget(win)
    win.show()
    yield win
    win.runner.shutdown()
    win.playground_page.shutdown()
    win.tasks.wait()
