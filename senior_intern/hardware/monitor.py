"""Live hardware readings for the training run: ``HardwareMonitor.sample()`` and ``MemoryWatch``.

``sample()`` is cheap enough to call every second (it never blocks: CPU percentages are the
average since the previous call). GPU readings come from NVML (the ``pynvml`` module of
nvidia-ml-py) for every NVIDIA GPU; without NVML they fall back to what torch knows about the
device in use. Anything a machine cannot report stays ``None`` — the monitor never raises.

This module does not import torch: it reads torch's allocator only when torch is already loaded,
so the GUI can sample the machine before the engine starts.
"""

from __future__ import annotations

import importlib
import os
import sys
import threading
import time
import weakref
from typing import Any, Callable

import psutil

from senior_intern.hardware.metrics import GpuMetrics, HardwareMetrics, format_bytes

# The per-GPU NVML readings, each turned off on its own (per GPU) after its first failure.
_NVML_FIELDS = ("utilization", "memory", "temperature", "power")


def visible_nvml_indices(count: int, visible: str | None, uuids: Callable[[], list[str]] | None = None) -> list[int]:
    """NVML indices of the GPUs torch sees, in torch's order (torch's cuda:N is entry N).

    ``visible``: the ``CUDA_VISIBLE_DEVICES`` value (None: unset, every GPU in NVML order).
    Entries are indices or UUID prefixes (``GPU-...``, matched against ``uuids()``, NVML's UUIDs
    by index); like CUDA, the list ends at the first entry that names no GPU.
    """
    if visible is None:
        return list(range(count))
    out: list[int] = []
    known: list[str] | None = None
    for entry in (e.strip() for e in visible.split(",")):
        if entry.isdigit():
            index = int(entry)
        elif entry.startswith(("GPU-", "MIG-")) and uuids is not None:
            known = uuids() if known is None else known
            matches = [i for i, u in enumerate(known) if u.startswith(entry)]
            index = matches[0] if len(matches) == 1 else -1
        else:
            break
        if not 0 <= index < count or index in out:
            break
        out.append(index)
    return out


class _NvmlSession:
    """One ``nvmlInit()`` with its device handles, paired with exactly one ``nvmlShutdown()``."""

    def __init__(self, nvml: Any) -> None:
        self._nvml = nvml
        nvml.nvmlInit()
        self._open = True
        try:
            count = nvml.nvmlDeviceGetCount()
            handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
            uuids = lambda: [self._text(nvml.nvmlDeviceGetUUID(h)) for h in handles]  # noqa: E731
            # Only the GPUs torch sees, numbered as torch numbers them.
            visible = visible_nvml_indices(count, os.environ.get("CUDA_VISIBLE_DEVICES"), uuids)
            self._handles = [handles[i] for i in visible]
            self._names = [self._name(h) for h in self._handles]
        except nvml.NVMLError:
            self.shutdown()
            raise
        self.disabled: set[tuple[int, str]] = set()  # (gpu index, field) that failed once

    def _name(self, handle: Any) -> str:
        """Marketing name of a GPU; older nvidia-ml-py versions return bytes."""
        return self._text(self._nvml.nvmlDeviceGetName(handle))

    @staticmethod
    def _text(value: Any) -> str:
        """older nvidia-ml-py versions return bytes."""
        return value.decode(errors="replace") if isinstance(value, bytes) else str(value)

    def _read(self, index: int, field: str, call: Callable[[], Any]) -> Any:
        """``call()``, or ``None`` when that field is off or fails now (then it stays off)."""
        if (index, field) in self.disabled:
            return None
        try:
            return call()
        except self._nvml.NVMLError:
            self.disabled.add((index, field))
            return None

    def read(self) -> tuple[GpuMetrics, ...]:
        """Utilisation (%), memory (bytes), temperature (C) and power (W) of every GPU."""
        nvml = self._nvml
        gpus = []
        for i, handle in enumerate(self._handles):
            rates = self._read(i, "utilization", lambda: nvml.nvmlDeviceGetUtilizationRates(handle))
            memory = self._read(i, "memory", lambda: nvml.nvmlDeviceGetMemoryInfo(handle))
            temp = self._read(i, "temperature", lambda: nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU))
            milliwatts = self._read(i, "power", lambda: nvml.nvmlDeviceGetPowerUsage(handle))
            gpus.append(
                GpuMetrics(
                    index=i,
                    name=self._names[i],
                    utilization=None if rates is None else float(rates.gpu),
                    memory_used=None if memory is None else int(memory.used),
                    memory_total=None if memory is None else int(memory.total),
                    temperature=None if temp is None else float(temp),
                    power_watts=None if milliwatts is None else milliwatts / 1000.0,
                )
            )
        return tuple(gpus)

    def shutdown(self) -> None:
        """Release NVML once; later calls do nothing. Errors at shutdown are ignored."""
        if not self._open:
            return
        self._open = False
        try:
            self._nvml.nvmlShutdown()
        except self._nvml.NVMLError:
            pass  # the driver went away first; nothing left to release


def peak_rss_bytes() -> int:
    """This process's own peak resident memory, in bytes.

    On Linux it is the address space's high-water mark (``VmHWM``), not ``getrusage``'s
    ``ru_maxrss``: that one carries the parent's peak across ``fork``/``exec``, so a small child
    of a large process would report the parent's size. macOS: ``ru_maxrss`` (bytes there);
    Windows: the peak working set; elsewhere the current RSS.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    info = psutil.Process().memory_info()
    peak = getattr(info, "peak_wset", None)
    if peak is not None:
        return int(peak)
    if sys.platform == "darwin":
        import resource

        return max(int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss), int(info.rss))
    return int(info.rss)


def _parse_device(device: Any) -> tuple[str | None, int | None]:
    """("cuda", 1) from "cuda:1" or ``torch.device("cuda", 1)``; (None, None) for None."""
    if device is None:
        return None, None
    kind, _, index = str(device).partition(":")
    return kind, int(index) if index else None


class HardwareMonitor:
    """Samples GPU, CPU and memory use as a ``HardwareMetrics``.

    ``device`` is the training device ("cuda:0", "mps", "cpu", a ``torch.device`` or ``None`` for
    whatever torch is using): torch's allocator figures are read for it. NVML starts on the first
    ``sample()`` and is shut down by ``close()``, on leaving a ``with`` block, when the monitor is
    garbage-collected, or at interpreter exit — exactly once. Pass ``use_nvml=False`` to skip it.

    psutil keeps its previous system-wide CPU reading per thread; sample from one thread (the
    first sample in a new thread reports 0% CPU).
    """

    def __init__(self, device: Any = None, *, use_nvml: bool = True) -> None:
        self._kind, self._index = _parse_device(device)
        self._use_nvml = use_nvml
        self._nvml: _NvmlSession | None = None
        self._nvml_tried = False
        self._finalizer: weakref.finalize | None = None
        self._lock = threading.Lock()
        self._process = psutil.Process()
        # Prime the non-blocking CPU counters: each later call reports the time since the last.
        self._process.cpu_percent(interval=None)
        psutil.cpu_percent(interval=None)

    def use_device(self, device: Any) -> None:
        """Read torch's allocator figures for ``device`` (the run's resolved device) from now on."""
        self._kind, self._index = _parse_device(device)

    @property
    def nvml_active(self) -> bool:
        """True when NVML started and is reporting GPUs."""
        return self._nvml is not None

    def _nvml_session(self) -> _NvmlSession | None:
        """Start NVML on first use; ``None`` when there is no module, library or driver."""
        with self._lock:
            if self._nvml_tried or not self._use_nvml:
                return self._nvml
            self._nvml_tried = True
            try:
                nvml = importlib.import_module("pynvml")
            except ImportError:
                return None
            try:
                session = _NvmlSession(nvml)
            except nvml.NVMLError:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
                return None
            self._nvml = session
            self._finalizer = weakref.finalize(self, session.shutdown)
            return session

    def close(self) -> None:
        """Shut NVML down (once) and stop reading GPUs through it."""
        with self._lock:
            self._nvml_tried = True  # no restart after close
            session, self._nvml = self._nvml, None
        if session is not None and self._finalizer is not None:
            self._finalizer()

    def __enter__(self) -> HardwareMonitor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def sample(self) -> HardwareMetrics:
        """One reading of the machine now; fields it cannot read are ``None``."""
        session = self._nvml_session()
        torch = sys.modules.get("torch")
        gpus = session.read() if session is not None else ()
        if not gpus:
            gpus = self._torch_gpus(torch)
        allocated, reserved = self._torch_memory(torch)
        system_cpu, process_cpu, rss = self._cpu_and_process()
        ram_total, ram_used = self._ram()
        return HardwareMetrics(
            cpu_utilization=system_cpu,
            process_cpu_utilization=process_cpu,
            ram_used=ram_used,
            ram_total=ram_total,
            process_rss=rss,
            gpus=gpus,
            torch_allocated=allocated,
            torch_reserved=reserved,
            timestamp=time.time(),
        )

    def _cpu_and_process(self) -> tuple[float | None, float | None, int | None]:
        """System CPU %, this process's CPU % (up to 100 x cores) and its resident memory."""
        try:
            system_cpu = float(psutil.cpu_percent(interval=None))
        except (psutil.Error, OSError):
            system_cpu = None
        try:
            with self._process.oneshot():
                process_cpu = float(self._process.cpu_percent(interval=None))
                rss = int(self._process.memory_info().rss)
        except (psutil.Error, OSError):
            process_cpu, rss = None, None
        return system_cpu, process_cpu, rss

    @staticmethod
    def _ram() -> tuple[int | None, int | None]:
        """(total, used) system RAM in bytes; used = total - available (caches count as free)."""
        try:
            memory = psutil.virtual_memory()
        except (psutil.Error, OSError):
            return None, None
        return int(memory.total), int(memory.total - memory.available)

    def _wants(self, kind: str) -> bool:
        """True when the monitored device is of ``kind`` or was left unspecified."""
        return self._kind is None or self._kind == kind

    def _cuda_index(self, torch: Any) -> int | None:
        """Index of the monitored CUDA device, or None when CUDA is not in use in this process."""
        if not self._wants("cuda") or not torch.cuda.is_initialized():
            return None
        return torch.cuda.current_device() if self._index is None else self._index

    def _torch_memory(self, torch: Any) -> tuple[int | None, int | None]:
        """(allocated, reserved) bytes of torch's allocator on the monitored CUDA/MPS device."""
        if torch is None:
            return None, None
        try:
            index = self._cuda_index(torch)
            if index is not None:
                return int(torch.cuda.memory_allocated(index)), int(torch.cuda.memory_reserved(index))
            if self._wants("mps") and torch.backends.mps.is_available():
                return int(torch.mps.current_allocated_memory()), int(torch.mps.driver_allocated_memory())
        except RuntimeError:
            pass  # the device was lost or reset: report nothing rather than fail the run
        return None, None

    def _torch_gpus(self, torch: Any) -> tuple[GpuMetrics, ...]:
        """Without NVML: memory of the CUDA device in use (``mem_get_info``) or of MPS (torch's
        recommended maximum as total). Never creates a CUDA context."""
        if torch is None:
            return ()
        try:
            index = self._cuda_index(torch)
            if index is not None:
                free, total = torch.cuda.mem_get_info(index)
                name = torch.cuda.get_device_name(index)
                return (GpuMetrics(index=index, name=name, memory_used=int(total - free), memory_total=int(total)),)
            if self._kind == "mps" and torch.backends.mps.is_available():
                used = int(torch.mps.driver_allocated_memory())
                total = int(torch.mps.recommended_max_memory())
                return (GpuMetrics(index=0, name="Apple MPS", memory_used=used, memory_total=total),)
        except RuntimeError:
            pass
        return ()


class MemoryWatch:
    """Turns samples into low-memory warnings, once per crossing.

    A resource (system RAM, each GPU) is low when its free memory is below ``min_free_fraction``
    of its total and below ``min_free_bytes`` (either may be ``None`` to use only the other). It
    warns when a resource becomes low and is re-armed only after free memory climbs back above the
    threshold plus ``rearm_margin`` (a fraction of the threshold), so hovering at the line does not
    repeat the warning. The engine turns the returned strings into ``LogMessage`` events.
    """

    def __init__(
        self,
        min_free_fraction: float | None = 0.05,
        min_free_bytes: int | None = 1024**3,
        rearm_margin: float = 0.10,
    ) -> None:
        if min_free_fraction is None and min_free_bytes is None:
            raise ValueError("MemoryWatch needs min_free_fraction or min_free_bytes (or both)")
        if min_free_fraction is not None and not 0 < min_free_fraction < 1:
            raise ValueError(f"min_free_fraction must be between 0 and 1, got {min_free_fraction}")
        if min_free_bytes is not None and min_free_bytes < 0:
            raise ValueError(f"min_free_bytes must be >= 0, got {min_free_bytes}")
        if rearm_margin < 0:
            raise ValueError(f"rearm_margin must be >= 0, got {rearm_margin}")
        self.min_free_fraction = min_free_fraction
        self.min_free_bytes = min_free_bytes
        self.rearm_margin = rearm_margin
        self._low: set[str] = set()  # resources that already warned and have not recovered

    def threshold(self, total: int) -> float:
        """Free bytes below which a resource of ``total`` bytes counts as low."""
        limits = []
        if self.min_free_fraction is not None:
            limits.append(self.min_free_fraction * total)
        if self.min_free_bytes is not None:
            limits.append(float(self.min_free_bytes))
        return min(limits)

    def _crossed(self, key: str, free: int, total: int) -> bool:
        """Update the state of ``key``; True only when it has just become low."""
        limit = self.threshold(total)
        if key in self._low:
            if free >= limit * (1 + self.rearm_margin):
                self._low.discard(key)
            return False
        if free < limit:
            self._low.add(key)
            return True
        return False

    def check(self, metrics: HardwareMetrics) -> list[str]:
        """Warnings for resources that fell below the threshold since the last check (often [])."""
        warnings = []
        if metrics.ram_total and metrics.ram_used is not None:
            free = metrics.ram_total - metrics.ram_used
            if self._crossed("ram", free, metrics.ram_total):
                warnings.append(
                    f"Low system memory: {format_bytes(free)} available of {format_bytes(metrics.ram_total)} "
                    f"({free / metrics.ram_total:.1%} free). Close other programs or lower batch_size "
                    "or max_seq_length, or the run may slow down or be stopped by the system."
                )
        for gpu in metrics.gpus:
            if not gpu.memory_total or gpu.memory_used is None:
                continue
            free = gpu.memory_total - gpu.memory_used
            if self._crossed(f"gpu{gpu.index}", free, gpu.memory_total):
                label = f"GPU {gpu.index} ({gpu.name})" if gpu.name else f"GPU {gpu.index}"
                warnings.append(
                    f"Low memory on {label}: {format_bytes(free)} free of {format_bytes(gpu.memory_total)} "
                    f"({free / gpu.memory_total:.1%} free). Lower batch_size or max_seq_length, or turn on "
                    "gradient_checkpointing, to avoid running out of GPU memory."
                )
        return warnings
