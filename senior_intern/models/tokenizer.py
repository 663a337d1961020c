"""``load_tokenizer``: a base model's tokenizer without its weights — the one every caller uses.

The training run, the estimate, the GUI's dataset analysis and ``senior-intern dataset inspect``
all tokenise with the tokenizer ``load_base_model`` would return; this opens only the tokenizer
files, so a 270M GGUF model is not loaded just to count tokens. Imports transformers when
called, never at module import.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from senior_intern.models.info import ModelLoadError, one_line

_tokenizers: dict[str, Any] = {}
_lock = threading.Lock()  # guards _path_locks
_path_locks: dict[str, threading.Lock] = {}


def model_folder(path: str | Path) -> Path:
    """The Hugging Face folder a model loads from: the folder itself, or a GGUF file's conversion
    in the model cache (converted now when missing, as the run would do first)."""
    from senior_intern.models import cache
    from senior_intern.models.inspection import metadata

    info = metadata(path)
    if info.source_format != "gguf":
        return Path(info.path)
    return cache.cached_conversion(info.content_hash) or cache.convert_gguf(Path(info.path), info.content_hash)


def tokenizer_cached(path: str | Path) -> bool:
    """True when the tokenizer of ``path`` is already loaded in this process (the next load is instant)."""
    return str(path) in _tokenizers


def load_tokenizer(path: str | Path) -> Any:
    """The tokenizer of the model at ``path`` (folder or ``.gguf``), loaded once per path and kept.

    Loads of the same path wait for each other; loads of different models do not. A tokenizer
    that cannot be read raises ``ModelLoadError`` (a ``ValueError``) naming the path.
    """
    key = str(path)
    with _lock:
        lock = _path_locks.setdefault(key, threading.Lock())
    with lock:
        if key not in _tokenizers:
            from transformers import AutoTokenizer

            folder = model_folder(path)
            try:
                _tokenizers[key] = AutoTokenizer.from_pretrained(folder, local_files_only=True)
            except (OSError, ValueError) as exc:
                raise ModelLoadError(f"{path}: could not load the tokenizer ({one_line(exc)})") from exc
        return _tokenizers[key]
