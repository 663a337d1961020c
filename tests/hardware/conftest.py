"""Fixtures for the hardware tests: a fake NVML with two GPUs, and a fake CUDA backend."""

from __future__ import annotations

from types import SimpleNamespace

import pynvml
import pytest
import torch

GIB = 1024**3


class FakeNvml:
    """Stands in for the NVML library behind ``pynvml``: two GPUs with fixed readings.

    ``calls`` counts calls per function name; ``fail`` maps a function name to the GPU indices
    whose calls raise ``NVMLError`` from now on.
    """

    names = ("NVIDIA Fake A100", b"NVIDIA Fake T4")  # the second as bytes, like old nvidia-ml-py

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}
        self.fail: dict[str, set[int]] = {}

    def _count(self, name: str, index: int | None = None) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1
        if index is not None and index in self.fail.get(name, set()):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)

    def install(self, monkeypatch: pytest.MonkeyPatch) -> FakeNvml:
        """Replace the pynvml functions the monitor uses."""
        functions = {
            "nvmlInit": lambda: self._count("nvmlInit"),
            "nvmlShutdown": lambda: self._count("nvmlShutdown"),
            "nvmlDeviceGetCount": lambda: (self._count("nvmlDeviceGetCount"), 2)[1],
            "nvmlDeviceGetHandleByIndex": lambda i: i,
            "nvmlDeviceGetName": lambda h: self.names[h],
            "nvmlDeviceGetUtilizationRates": self.utilization,
            "nvmlDeviceGetMemoryInfo": self.memory,
            "nvmlDeviceGetTemperature": self.temperature,
            "nvmlDeviceGetPowerUsage": self.power,
        }
        for name, function in functions.items():
            monkeypatch.setattr(pynvml, name, function)
        return self

    def utilization(self, handle: int) -> SimpleNamespace:
        self._count("nvmlDeviceGetUtilizationRates", handle)
        return SimpleNamespace(gpu=[87, 12][handle], memory=[40, 5][handle])

    def memory(self, handle: int) -> SimpleNamespace:
        self._count("nvmlDeviceGetMemoryInfo", handle)
        total = [80 * GIB, 16 * GIB][handle]
        used = [60 * GIB, 2 * GIB][handle]
        return SimpleNamespace(total=total, used=used, free=total - used)

    def temperature(self, handle: int, sensor: int) -> int:
        assert sensor == pynvml.NVML_TEMPERATURE_GPU
        self._count("nvmlDeviceGetTemperature", handle)
        return [71, 45][handle]

    def power(self, handle: int) -> int:
        self._count("nvmlDeviceGetPowerUsage", handle)
        return [312_500, 70_000][handle]  # milliwatts


@pytest.fixture
def fake_nvml(monkeypatch: pytest.MonkeyPatch) -> FakeNvml:
    """A fake NVML reporting two GPUs (A100-like 80 GiB, T4-like 16 GiB)."""
    return FakeNvml().install(monkeypatch)


@pytest.fixture
def fake_cuda(monkeypatch: pytest.MonkeyPatch) -> dict[int, dict]:
    """Pretend torch sees two CUDA GPUs: cuda:0 compute 7.5 with 3 GiB free of 16, cuda:1
    compute 8.0 with 30 GiB free of 40. Returns the per-index description (editable)."""
    gpus = {
        0: {"name": "Fake T4", "capability": (7, 5), "free": 3 * GIB, "total": 16 * GIB},
        1: {"name": "Fake A100", "capability": (8, 0), "free": 30 * GIB, "total": 40 * GIB},
    }
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: len(gpus))
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=None: gpus[i or 0]["name"])
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i=None: gpus[i or 0]["capability"])
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda i=None: (gpus[i or 0]["free"], gpus[i or 0]["total"]))
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda i=None: 5 * GIB + (i or 0))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda i=None: 6 * GIB + (i or 0))
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    return gpus
