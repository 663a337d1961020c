"""The ``senior_intern.hardware`` package exports its API lazily (torch loads only for detect)."""

from __future__ import annotations

import pytest

import senior_intern.hardware as hardware
from senior_intern.hardware import detect, monitor


def test_names_resolve_to_their_modules():
    assert hardware.resolve_device is detect.resolve_device
    assert hardware.HardwareMonitor is monitor.HardwareMonitor
    assert set(hardware.__all__) >= {"HardwareMetrics", "DeviceInfo", "MemoryWatch", "recommended_dtype"}


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        hardware.nonexistent  # noqa: B018
