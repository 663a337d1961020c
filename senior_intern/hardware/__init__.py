"""Hardware: what the machine has (``detect``), what it is doing (``monitor``), and the
``HardwareMetrics`` snapshot the engine reports (``metrics``).

``metrics`` and ``monitor`` import without torch (the GUI uses them); the names from ``detect``,
which needs torch, load on first access.
"""

from __future__ import annotations

import importlib
from typing import Any

from senior_intern.hardware.metrics import GpuMetrics, HardwareMetrics, format_bytes

_LAZY = {
    "DeviceInfo": "detect",
    "CpuInfo": "detect",
    "detect_cpu": "detect",
    "detect_devices": "detect",
    "available_device_names": "detect",
    "recommended_device": "detect",
    "recommended_dtype": "detect",
    "resolve_device": "detect",
    "resolve_dtype": "detect",
    "HardwareMonitor": "monitor",
    "MemoryWatch": "monitor",
    "peak_rss_bytes": "monitor",
}

__all__ = ["GpuMetrics", "HardwareMetrics", "format_bytes", *_LAZY]


def __getattr__(name: str) -> Any:
    """Import ``detect`` / ``monitor`` only when one of their names is first used."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
