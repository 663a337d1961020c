"""MemoryWatch: one warning per crossing of the low-memory line, for system RAM and each GPU."""

from __future__ import annotations

from types import SimpleNamespace

import psutil
import pytest

from senior_intern.hardware.metrics import GpuMetrics, HardwareMetrics
from senior_intern.hardware.monitor import HardwareMonitor, MemoryWatch

GIB = 1024**3


@pytest.fixture
def ram(monkeypatch):
    """Set the system's available RAM (total 16 GiB) by assigning ``ram.available``."""
    state = SimpleNamespace(total=16 * GIB, available=8 * GIB)
    monkeypatch.setattr(psutil, "virtual_memory", lambda: SimpleNamespace(total=state.total, available=state.available))
    return state


def _check_ram(watch: MemoryWatch, monitor: HardwareMonitor, ram, available: int) -> list[str]:
    ram.available = available
    return watch.check(monitor.sample())


def test_ram_warning_fires_once_per_crossing(ram):
    watch = MemoryWatch(min_free_fraction=0.10, min_free_bytes=None)  # line at 1.6 GiB
    monitor = HardwareMonitor(use_nvml=False)
    assert _check_ram(watch, monitor, ram, 8 * GIB) == []
    (warning,) = _check_ram(watch, monitor, ram, GIB)
    assert warning.startswith("Low system memory: 1.00 GB available of 16.00 GB (6.2% free)")
    assert "batch_size" in warning
    assert _check_ram(watch, monitor, ram, GIB // 2) == []  # still low: no repeat
    assert _check_ram(watch, monitor, ram, GIB) == []
    assert _check_ram(watch, monitor, ram, 8 * GIB) == []  # recovered, re-armed
    assert len(_check_ram(watch, monitor, ram, GIB)) == 1  # a new crossing warns again


def test_hovering_at_the_line_does_not_repeat(ram):
    watch = MemoryWatch(min_free_fraction=None, min_free_bytes=GIB, rearm_margin=0.10)
    monitor = HardwareMonitor(use_nvml=False)
    assert len(_check_ram(watch, monitor, ram, GIB - 1)) == 1
    assert _check_ram(watch, monitor, ram, GIB + GIB // 20) == []  # above the line, inside the margin
    assert _check_ram(watch, monitor, ram, GIB - 1) == []
    assert _check_ram(watch, monitor, ram, GIB + GIB // 5) == []  # past the margin: re-armed
    assert len(_check_ram(watch, monitor, ram, GIB - 1)) == 1


def test_gpu_warnings_per_gpu():
    def sample(free0: int, free1: int) -> HardwareMetrics:
        gpus = (
            GpuMetrics(index=0, name="A100", memory_used=80 * GIB - free0, memory_total=80 * GIB),
            GpuMetrics(index=1, memory_used=16 * GIB - free1, memory_total=16 * GIB),
        )
        return HardwareMetrics(gpus=gpus)

    watch = MemoryWatch(min_free_fraction=0.05, min_free_bytes=GIB)  # below both: 1 GiB on each here
    assert watch.check(sample(10 * GIB, 10 * GIB)) == []
    assert watch.check(sample(3 * GIB, 10 * GIB)) == []  # under 5% of 80 GiB but not under 1 GiB
    (warning,) = watch.check(sample(GIB // 2, 10 * GIB))
    assert warning.startswith("Low memory on GPU 0 (A100): 512.0 MB free of 80.00 GB")
    assert "gradient_checkpointing" in warning
    (warning,) = watch.check(sample(GIB // 2, GIB // 4))
    assert warning.startswith("Low memory on GPU 1: 256.0 MB free of 16.00 GB (1.6% free)")
    assert watch.check(sample(GIB // 2, GIB // 4)) == []


def test_threshold_is_the_lower_of_fraction_and_bytes():
    assert MemoryWatch(0.05, GIB).threshold(80 * GIB) == GIB
    assert MemoryWatch(0.05, GIB).threshold(8 * GIB) == pytest.approx(0.4 * GIB)
    assert MemoryWatch(0.05, None).threshold(80 * GIB) == pytest.approx(4 * GIB)
    assert MemoryWatch(None, 123).threshold(80 * GIB) == 123


def test_unknown_memory_never_warns():
    watch = MemoryWatch()
    empty = HardwareMetrics(gpus=(GpuMetrics(index=0),))
    assert watch.check(empty) == []
    assert watch.check(HardwareMetrics(ram_total=0, ram_used=0)) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"min_free_fraction": None, "min_free_bytes": None}, "min_free_fraction or min_free_bytes"),
        ({"min_free_fraction": 1.5}, "between 0 and 1"),
        ({"min_free_fraction": 0.0}, "between 0 and 1"),
        ({"min_free_bytes": -1}, "min_free_bytes must be >= 0"),
        ({"rearm_margin": -0.1}, "rearm_margin must be >= 0"),
    ],
)
def test_bad_thresholds_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MemoryWatch(**kwargs)
