"""What this machine can train on: devices, the CPU, and the device and dtype to use.

``detect_devices()`` lists CUDA GPUs, Apple's MPS and the CPU (always last).
``resolve_device()`` and ``resolve_dtype()`` turn ``TrainingConfig.device`` / ``.dtype``
("auto", "cuda:1", "bfloat16", ...) into torch objects, with a readable ``ValueError`` when the
setting cannot work here.

The CPU dtype choice is measured, not guessed: bfloat16 is only recommended on a CPU when a short
matmul micro-benchmark (see ``cpu_bf16_speedup``) shows it clearly faster than float32.
"""

from __future__ import annotations

import functools
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import torch

from senior_intern.config import SUPPORTED_DTYPES
from senior_intern.hardware.monitor import visible_nvml_indices

# Tensor cores with fast float16 arrived with compute capability 7.0 (Volta); bfloat16 with 8.0.
_FP16_MIN_CAPABILITY = (7, 0)
_BF16_MIN_CAPABILITY = (8, 0)

# bfloat16 must be at least this much faster than float32 on the CPU before it is recommended:
# a margin against timing noise on a busy machine, and bfloat16 costs precision.
CPU_BF16_MIN_SPEEDUP = 1.25

# Shape of the benchmark matmul: (512 x 576) @ (576 x 1536), a small Llama MLP projection.
_BENCH_SHAPE = (512, 576, 1536)
_BENCH_REPEATS = 3

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class DeviceInfo:
    """One device torch can train on.

    ``name`` is what ``TrainingConfig.device`` accepts ("cuda:0", "mps", "cpu"); ``kind`` is the
    torch device type ("cuda", "mps", "cpu"). Memory is in bytes, ``None`` where the backend does
    not say. ``compute_capability`` is ``(major, minor)`` for CUDA GPUs, ``None`` otherwise.
    ``supports_bf16`` means native bfloat16 arithmetic: compute capability 8.0+ (or ROCm) on
    CUDA, macOS 14+ and a bfloat16 matmul that works on MPS, AVX512-BF16 / AMX-BF16 / Arm BF16 instructions on the CPU.
    """

    name: str
    kind: str
    display_name: str
    total_memory: int | None = None
    free_memory: int | None = None
    compute_capability: tuple[int, int] | None = None
    supports_bf16: bool = False


@dataclass(frozen=True)
class CpuInfo:
    """The processor and system memory (bytes), with the instruction-set flags that matter for
    training speed: AVX2, AVX-512, AVX512-BF16 and AMX-BF16. ``physical_cores`` is ``None``
    where the OS does not tell."""

    model_name: str
    physical_cores: int | None
    logical_cores: int
    ram_total: int
    ram_available: int
    avx2: bool = False
    avx512f: bool = False
    avx512_bf16: bool = False
    amx_bf16: bool = False
    arm_bf16: bool = False

    @property
    def native_bf16(self) -> bool:
        """True when the CPU has bfloat16 instructions (x86 AVX512-BF16/AMX-BF16 or Arm BF16)."""
        return self.avx512_bf16 or self.amx_bf16 or self.arm_bf16


def _read_cpuinfo(path: Path) -> tuple[str | None, set[str]]:
    """Model name and feature flags of the first processor in ``path``; ``(None, set())`` when
    the file does not exist (not Linux)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return None, set()
    model: str | None = None
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if model is None and key in ("model name", "hardware", "cpu model"):
            model = value.strip() or None
        elif not flags and key in ("flags", "features"):  # x86 says flags, Arm says Features
            flags = set(value.split())
    return model, flags


def detect_cpu(cpuinfo: Path = Path("/proc/cpuinfo")) -> CpuInfo:
    """The CPU model, core counts, RAM and instruction-set flags of this machine.

    Model and flags come from ``cpuinfo`` (Linux); elsewhere the model from ``platform`` and the
    AVX2/AVX-512 flags from the vector unit torch's kernels were built for.
    """
    model, flags = _read_cpuinfo(cpuinfo)
    if not flags:  # not Linux: ask torch which vector unit its kernels use
        capability = torch.backends.cpu.get_cpu_capability()
        if capability.startswith("AVX512"):
            flags = {"avx2", "avx512f"}
        elif capability.startswith("AVX2"):
            flags = {"avx2"}
    memory = psutil.virtual_memory()
    return CpuInfo(
        model_name=model or platform.processor() or platform.machine() or "unknown CPU",
        physical_cores=psutil.cpu_count(logical=False),
        logical_cores=psutil.cpu_count(logical=True) or os.cpu_count() or 1,
        ram_total=int(memory.total),
        ram_available=int(memory.available),
        avx2="avx2" in flags,
        avx512f="avx512f" in flags,
        avx512_bf16="avx512_bf16" in flags,
        amx_bf16="amx_bf16" in flags,
        arm_bf16="bf16" in flags,
    )


def _nvml_memory() -> list[tuple[int, int]] | None:
    """(free, total) bytes of every GPU torch sees, in torch's order, from NVML: no CUDA context
    is created (``mem_get_info`` makes one, about 0.5 GB, on each GPU it asks). None without NVML."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # no module, no library, no driver
        return None
    try:
        handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]

        def uuids() -> list[str]:
            raw = [pynvml.nvmlDeviceGetUUID(h) for h in handles]
            return [u.decode(errors="replace") if isinstance(u, bytes) else str(u) for u in raw]

        visible = visible_nvml_indices(len(handles), os.environ.get("CUDA_VISIBLE_DEVICES"), uuids)
        memory = [pynvml.nvmlDeviceGetMemoryInfo(handles[i]) for i in visible]
        return [(int(m.free), int(m.total)) for m in memory]
    except Exception:
        return None
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass


def _cuda_device(index: int, memory: tuple[int, int] | None = None) -> DeviceInfo:
    """Describe CUDA device ``index``; ``memory`` (free, total) from NVML, else ``mem_get_info``
    (which creates the device's CUDA context if there is none yet)."""
    capability = tuple(torch.cuda.get_device_capability(index))
    try:
        free, total = memory if memory is not None else torch.cuda.mem_get_info(index)
    except RuntimeError:  # device busy or in an exclusive compute mode
        free, total = None, torch.cuda.get_device_properties(index).total_memory
    bf16 = bool(torch.version.hip) or capability >= _BF16_MIN_CAPABILITY
    return DeviceInfo(
        name=f"cuda:{index}",
        kind="cuda",
        display_name=torch.cuda.get_device_name(index),
        total_memory=int(total),
        free_memory=None if free is None else int(free),
        compute_capability=(int(capability[0]), int(capability[1])),
        supports_bf16=bf16,
    )


def _mps_device() -> DeviceInfo:
    """Describe Apple's Metal GPU. Its memory is shared with the system; torch's recommended
    maximum is reported as the total and what the driver has not yet taken as free."""
    total = int(torch.mps.recommended_max_memory())
    free = max(0, total - int(torch.mps.driver_allocated_memory()))
    return DeviceInfo(
        name="mps",
        kind="mps",
        display_name=f"Apple {torch.backends.mps.get_name()} (MPS)",
        total_memory=total,
        free_memory=free,
        supports_bf16=_device_supports_bf16(torch.device("mps")),
    )


def _cpu_device(cpu: CpuInfo) -> DeviceInfo:
    """The CPU as a training device; its memory is the system RAM."""
    return DeviceInfo(
        name="cpu",
        kind="cpu",
        display_name=cpu.model_name,
        total_memory=cpu.ram_total,
        free_memory=cpu.ram_available,
        supports_bf16=cpu.native_bf16,
    )


def _mps_available() -> bool:
    """True when torch was built with MPS and this Mac can use it."""
    return bool(torch.backends.mps.is_available())


def detect_devices() -> list[DeviceInfo]:
    """Every device torch can use here: CUDA GPUs by index, then MPS, then the CPU (always last).

    Free CUDA memory comes from NVML where it answers for every GPU torch sees; otherwise
    ``mem_get_info`` creates a CUDA context on each GPU the first time.
    """
    devices: list[DeviceInfo] = []
    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        memory = _nvml_memory()
        if memory is None or len(memory) != count:
            memory = [None] * count
        devices.extend(_cuda_device(i, memory[i]) for i in range(count))
    if _mps_available():
        devices.append(_mps_device())
    devices.append(_cpu_device(detect_cpu()))
    return devices


def free_memory(device: torch.device | str) -> int | None:
    """Bytes free on ``device`` now (the CPU: available system RAM), or None when it is not here."""
    device = torch.device(device)
    for d in detect_devices():
        if d.kind == device.type and (device.type != "cuda" or d.name == f"cuda:{device.index or 0}"):
            return d.free_memory
    return None


def available_device_names() -> list[str]:
    """Names ``TrainingConfig.device`` may take here, besides "auto": e.g.
    ``["cuda", "cuda:0", "cuda:1", "cpu"]`` ("cuda" is torch's current CUDA device).
    Cheap: counts devices without touching their memory."""
    names: list[str] = []
    if torch.cuda.is_available() and torch.cuda.device_count() > 0:
        names.append("cuda")
        names.extend(f"cuda:{i}" for i in range(torch.cuda.device_count()))
    if _mps_available():
        names.append("mps")
    names.append("cpu")
    return names


def recommended_device() -> str:
    """The device "auto" picks: the CUDA GPU with the most free memory (lowest index on a tie),
    else MPS, else "cpu"."""
    devices = detect_devices()
    cuda = [d for d in devices if d.kind == "cuda"]
    if cuda:
        return max(cuda, key=lambda d: (d.free_memory or 0, -int(d.name.split(":")[1]))).name
    return devices[0].name  # mps when present, else cpu (always last)


def resolve_device(setting: str) -> torch.device:
    """Turn ``TrainingConfig.device`` into a ``torch.device``.

    "auto" picks ``recommended_device()``; "cuda" means the current CUDA device. A device this
    machine does not have raises ``ValueError`` naming the ones it has.
    """
    name = setting.strip().lower()
    if name == "auto":
        return torch.device(recommended_device())
    available = available_device_names()
    if name not in available:
        raise ValueError(
            f"Device {setting!r} (training.device) is not available on this machine; "
            f"choose auto or one of: {', '.join(available)}"
        )
    if name == "cuda":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device(name)


def empty_device_caches() -> None:
    """Give the memory torch's caching allocators hold back to the GPU driver (CUDA and MPS)."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
    if torch.backends.mps.is_available():
        torch.mps.empty_cache()


def _time_matmul(dtype: torch.dtype) -> float:
    """Best-of-N seconds for one benchmark matmul in ``dtype`` on the CPU."""
    m, k, n = _BENCH_SHAPE
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(m, k, generator=generator).to(dtype)  # (512, 576)
    b = torch.randn(k, n, generator=generator).to(dtype)  # (576, 1536)
    torch.matmul(a, b)  # warm-up: first call picks kernels and allocates
    best = float("inf")
    for _ in range(_BENCH_REPEATS):
        start = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - start)
    return best


@functools.cache
def cpu_bf16_speedup() -> float:
    """How many times faster a bfloat16 matmul runs than a float32 one on this CPU (> 1 means
    bfloat16 is faster). Measured once per process on (512 x 576) @ (576 x 1536) matmuls, best of
    three after a warm-up; takes a few tens of milliseconds."""
    with torch.inference_mode():
        fp32 = _time_matmul(torch.float32)
        bf16 = _time_matmul(torch.bfloat16)
    return fp32 / bf16 if bf16 > 0 else 1.0


def _as_device(device: torch.device | str) -> torch.device:
    """Accept a ``torch.device`` or a device string such as "cuda:1"."""
    return device if isinstance(device, torch.device) else torch.device(device)


def _cuda_capability(device: torch.device) -> tuple[int, int]:
    """Compute capability of a CUDA device (index None means the current device)."""
    index = torch.cuda.current_device() if device.index is None else device.index
    major, minor = torch.cuda.get_device_capability(index)
    return int(major), int(minor)


def _device_supports_bf16(device: torch.device) -> bool:
    """Native bfloat16 on a GPU: compute capability 8.0+ or ROCm on CUDA; on MPS, macOS 14+ and a
    bfloat16 matmul that really runs there (``bf16_matmul_works``)."""
    if device.type == "cuda":
        return bool(torch.version.hip) or _cuda_capability(device) >= _BF16_MIN_CAPABILITY
    if device.type == "mps":
        return bool(torch.backends.mps.is_macos_or_newer(14, 0)) and bf16_matmul_works(str(device))
    return False


@functools.cache
def bf16_matmul_works(device: str) -> bool:
    """Whether a small bfloat16 matmul, with its backward, runs on ``device`` and agrees with float32.

    Measured support rather than an OS version: a macOS or torch build can advertise bfloat16 on
    MPS and still fail (or silently mis-compute) the kernels training needs. Cached per device.
    """
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(32, 48, generator=gen), torch.randn(48, 16, generator=gen)
    try:
        x = a.to(device, torch.bfloat16).requires_grad_()
        y = x @ b.to(device, torch.bfloat16)
        y.float().sum().backward()
        got, grad = y.float().cpu(), x.grad.float().cpu()
    except (RuntimeError, TypeError, NotImplementedError):
        return False
    want = a @ b
    # bfloat16 keeps 8 bits of mantissa: products of 48 terms agree to about 2% of their scale.
    scale = float(want.abs().max())
    return bool(torch.isfinite(got).all()) and float((got - want).abs().max()) <= 0.05 * scale \
        and torch.allclose(grad, b.sum(dim=1).expand_as(grad), rtol=0.05, atol=0.05)


def recommended_dtype(device: torch.device | str) -> torch.dtype:
    """The compute dtype "auto" picks for the base model on ``device``.

    - CUDA / MPS with native bfloat16 (Ampere+, ROCm, macOS 14+ where it measurably works): bfloat16.
    - CUDA with tensor cores but no bfloat16 (compute capability 7.x, e.g. V100, T4) and MPS on
      older macOS: float16 — half the memory and several times the speed of float32; the trainer
      must scale the loss (``torch.amp.GradScaler``) so small gradients do not underflow.
    - Older CUDA GPUs (compute capability below 7.0, slow float16): float32.
    - CPU: bfloat16 only when ``cpu_bf16_speedup()`` measures it at least ``CPU_BF16_MIN_SPEEDUP``
      times faster than float32 (CPUs with AVX512-BF16 or AMX usually are), else float32.
    """
    device = _as_device(device)
    if device.type in ("cuda", "mps"):
        if _device_supports_bf16(device):
            return torch.bfloat16
        if device.type == "mps" or _cuda_capability(device) >= _FP16_MIN_CAPABILITY:
            return torch.float16
        return torch.float32
    if cpu_bf16_speedup() >= CPU_BF16_MIN_SPEEDUP:
        return torch.bfloat16
    return torch.float32


def resolve_dtype(setting: str, device: torch.device | str) -> torch.dtype:
    """Turn ``TrainingConfig.dtype`` ("auto", "float32", "bfloat16", "float16") into a torch
    dtype for ``device``. Raises ``ValueError`` for an unknown name, float16 on the CPU (too slow
    and numerically fragile there) and bfloat16 on a GPU without native support."""
    name = setting.strip().lower()
    device = _as_device(device)
    if name == "auto":
        return recommended_dtype(device)
    if name not in _DTYPES:
        raise ValueError(f"Unknown dtype {setting!r} (training.dtype); choose one of {', '.join(SUPPORTED_DTYPES)}")
    if name == "float16" and device.type == "cpu":
        raise ValueError(
            "dtype float16 (training.dtype) is not supported for training on the CPU; "
            "use bfloat16 (faster on CPUs with AVX512-BF16/AMX) or float32 (or auto)"
        )
    if name == "bfloat16" and device.type in ("cuda", "mps") and not _device_supports_bf16(device):
        raise ValueError(
            f"dtype bfloat16 (training.dtype) needs a GPU with native bfloat16 (NVIDIA compute "
            f"capability 8.0+, or macOS 14+ for MPS with a working bfloat16 matmul); {device} has none: "
            "use float16, float32 or auto"
        )
    return _DTYPES[name]
