"""``HardwareMetrics``: one sample of the machine's state, as the engine and the GUI show it.

Fields that a machine cannot report (no NVIDIA GPU, no NVML) stay ``None``; never an exception.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


def format_bytes(n: int | float | None) -> str:
    """Human-readable byte count: ``512 B``, ``1.5 KB``, ``12.3 MB``, ``2.25 GB`` (as the spec)."""
    if n is None or (isinstance(n, float) and math.isnan(n)):
        return "-"
    n = int(n)
    if n < 1024:
        return f"{n} B"
    if n < 1024**2:
        return f"{n / 1024:.1f} KB"
    if n < 1024**3:
        return f"{n / 1024**2:.1f} MB"
    return f"{n / 1024**3:.2f} GB"


@dataclass(frozen=True)
class GpuMetrics:
    """One GPU as NVML (or torch) reports it."""

    index: int
    name: str = ""
    utilization: float | None = None  # percent
    memory_used: int | None = None  # bytes
    memory_total: int | None = None  # bytes
    temperature: float | None = None  # degrees C
    power_watts: float | None = None

    @property
    def memory_utilization(self) -> float:
        """Memory used as a percent of total (0 when unknown)."""
        if self.memory_used is None or not self.memory_total:
            return 0.0
        return self.memory_used / self.memory_total * 100


@dataclass(frozen=True)
class HardwareMetrics:
    """A snapshot of GPU, CPU and memory use. Byte counts are ints; percentages 0..100."""

    cpu_utilization: float | None = None  # system-wide percent
    process_cpu_utilization: float | None = None  # this process, percent of one core x cores
    ram_used: int | None = None
    ram_total: int | None = None
    process_rss: int | None = None
    gpus: tuple[GpuMetrics, ...] = field(default_factory=tuple)
    torch_allocated: int | None = None  # torch's own allocator (CUDA/MPS), bytes
    torch_reserved: int | None = None
    timestamp: float = 0.0  # time.time()

    @property
    def ram_utilization(self) -> float:
        """RAM used as a percent of total (0 when unknown)."""
        if self.ram_used is None or not self.ram_total:
            return 0.0
        return self.ram_used / self.ram_total * 100

    # The spec's single-GPU view: the first GPU, or None/0 without one.
    @property
    def gpu_utilization(self) -> float | None:
        """Utilisation of the first GPU in percent, or None without one."""
        return self.gpus[0].utilization if self.gpus else None

    @property
    def gpu_memory_used(self) -> int | None:
        """Memory used on the first GPU in bytes, or None without one."""
        return self.gpus[0].memory_used if self.gpus else None

    @property
    def gpu_memory_total(self) -> int | None:
        """Total memory of the first GPU in bytes, or None without one."""
        return self.gpus[0].memory_total if self.gpus else None

    @property
    def gpu_temperature(self) -> float | None:
        """Temperature of the first GPU in degrees C, or None without one."""
        return self.gpus[0].temperature if self.gpus else None

    @property
    def gpu_memory_utilization(self) -> float:
        """Memory used on the first GPU as a percent (0 without one)."""
        return self.gpus[0].memory_utilization if self.gpus else 0.0
