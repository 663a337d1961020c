"""The names of everything Senior Intern writes to disk, and the one way it writes a file.

Torch-free, so the GUI (``gui/runs.py``) and the engine (``training/checkpoint.py``,
``adapters/store.py``) read the same names. Locations (library, runs, cache) are in ``paths``.

A run folder ``<output>/<job-name>/`` holds ``job.toml``, ``metrics.jsonl`` and
``checkpoints/`` with ``step-0000120/`` folders and ``best/``; each checkpoint holds
``lora.safetensors``, ``trainer_state.pt``, ``state.json`` (written last) and ``job.toml``.
An adapter folder holds PEFT's ``adapter_config.json`` and ``adapter_model.safetensors`` plus
our ``senior_intern.json``.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

# Run folder
JOB_FILE = "job.toml"
METRICS_FILE = "metrics.jsonl"
CHECKPOINTS_DIR = "checkpoints"
# Checkpoint folder
CHECKPOINT_PREFIX = "step-"
BEST = "best"
LORA_FILE = "lora.safetensors"
TRAINER_STATE_FILE = "trainer_state.pt"
STATE_FILE = "state.json"
CHECKPOINT_FILES = (LORA_FILE, TRAINER_STATE_FILE, STATE_FILE, JOB_FILE)
# Adapter folder (PEFT's layout plus our metadata)
ADAPTER_CONFIG_FILE = "adapter_config.json"
ADAPTER_WEIGHTS_FILE = "adapter_model.safetensors"
ADAPTER_METADATA_FILE = "senior_intern.json"


def checkpoint_name(step: int) -> str:
    """The folder name of the regular checkpoint at optimizer step ``step``: ``step-0000120``."""
    return f"{CHECKPOINT_PREFIX}{step:07d}"


def checkpoint_step(name: str) -> int | None:
    """The step of a regular checkpoint folder name (``step-0000120`` -> 120); None for others."""
    digits = name.removeprefix(CHECKPOINT_PREFIX)
    return int(digits) if name.startswith(CHECKPOINT_PREFIX) and digits.isdigit() else None


def read_json_object(path: str | Path, label: str | None = None) -> dict:
    """The JSON object in ``path``; ValueError saying "<label> is not valid JSON (...)" or "is not a
    JSON object" (``label``: the file's name unless given)."""
    path = Path(path)
    label = label or path.name
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"{label} is not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{label} is not a JSON object")
    return data


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` through a temporary file in the same folder and a rename,
    so a reader or a crash never sees half a file. Creates the folder; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def folder_size(path: str | Path) -> int:
    """Bytes of every file under ``path`` (0 for a missing folder)."""
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())
