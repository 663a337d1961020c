"""Where Senior Intern keeps its files: runs, adapters and the model cache.

Every location can be moved at once with the ``SENIOR_INTERN_HOME`` environment variable
(used by the tests and by portable installs); otherwise the platform's user data and cache
folders are used (``platformdirs``).
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

APP_NAME = "senior-intern"


def _home() -> Path | None:
    value = os.environ.get("SENIOR_INTERN_HOME")
    return Path(value).expanduser() if value else None


def data_dir() -> Path:
    """Root of the user's data: the adapter library and the default run folder live here."""
    home = _home()
    return home / "data" if home else Path(platformdirs.user_data_dir(APP_NAME))


def cache_dir() -> Path:
    """Root of the cache: converted GGUF models and other things that can be rebuilt."""
    home = _home()
    return home / "cache" if home else Path(platformdirs.user_cache_dir(APP_NAME))


def adapters_dir() -> Path:
    """Default adapter library folder."""
    return data_dir() / "adapters"


def exports_dir() -> Path:
    """Default folder for merged models and GGUF exports, next to the adapter library."""
    return data_dir() / "exports"


def runs_dir() -> Path:
    """Default output folder for training runs (one sub-folder per job)."""
    return data_dir() / "runs"


def model_cache_dir() -> Path:
    """Folder that holds GGUF files converted to safetensors, keyed by content hash."""
    return cache_dir() / "models"
