"""Device, CPU and dtype detection: on this machine, and on a pretend two-GPU CUDA machine."""

from __future__ import annotations

import psutil
import pytest
import torch

from senior_intern.hardware import detect

HAS_GPU = torch.cuda.is_available() or torch.backends.mps.is_available()
cpu_only = pytest.mark.skipif(HAS_GPU, reason="checks the CPU-only behaviour of this machine")


# --- this machine --------------------------------------------------------------------------


def test_cpu_info_is_sane():
    cpu = detect.detect_cpu()
    assert cpu.model_name
    assert cpu.logical_cores >= 1
    assert cpu.physical_cores is None or 1 <= cpu.physical_cores <= cpu.logical_cores
    assert cpu.ram_total == psutil.virtual_memory().total
    assert 0 < cpu.ram_available <= cpu.ram_total
    if cpu.avx512f:
        assert cpu.avx2  # every AVX-512 CPU has AVX2


def test_detect_devices_lists_cpu_last_with_system_memory():
    devices = detect.detect_devices()
    cpu = devices[-1]
    assert (cpu.name, cpu.kind) == ("cpu", "cpu")
    assert cpu.total_memory == psutil.virtual_memory().total
    assert 0 < cpu.free_memory <= cpu.total_memory
    assert cpu.compute_capability is None
    assert cpu.supports_bf16 == detect.detect_cpu().native_bf16
    assert [d.name for d in devices if d.kind == "cpu"] == ["cpu"]


@cpu_only
def test_cpu_only_machine_offers_only_the_cpu():
    assert detect.available_device_names() == ["cpu"]
    assert detect.recommended_device() == "cpu"
    assert detect.resolve_device("auto") == torch.device("cpu")
    assert detect.resolve_device(" CPU ") == torch.device("cpu")


@cpu_only
@pytest.mark.parametrize("setting", ["cuda", "cuda:0", "mps", "tpu"])
def test_unavailable_device_names_the_available_ones(setting):
    with pytest.raises(ValueError, match=r"not available on this machine; choose auto or one of: cpu"):
        detect.resolve_device(setting)


def test_cpu_bf16_speedup_is_measured_once_per_process():
    detect.cpu_bf16_speedup.cache_clear()
    first = detect.cpu_bf16_speedup()
    assert first > 0
    assert detect.cpu_bf16_speedup() == first
    assert detect.cpu_bf16_speedup.cache_info().misses == 1


def test_cpu_dtype_follows_the_measurement():
    expected = torch.bfloat16 if detect.cpu_bf16_speedup() >= detect.CPU_BF16_MIN_SPEEDUP else torch.float32
    assert detect.recommended_dtype("cpu") == expected
    assert detect.resolve_dtype("auto", torch.device("cpu")) == expected


@pytest.mark.parametrize(("speedup", "expected"), [(2.6, torch.bfloat16), (1.3, torch.bfloat16), (1.1, torch.float32), (0.2, torch.float32)])
def test_cpu_bf16_only_when_clearly_faster(monkeypatch, speedup, expected):
    monkeypatch.setattr(detect, "cpu_bf16_speedup", lambda: speedup)
    assert detect.recommended_dtype(torch.device("cpu")) == expected


@pytest.mark.parametrize(
    ("setting", "expected"),
    [("float32", torch.float32), ("bfloat16", torch.bfloat16), (" BFloat16 ", torch.bfloat16)],
)
def test_resolve_dtype_explicit_on_cpu(setting, expected):
    assert detect.resolve_dtype(setting, "cpu") == expected


def test_float16_on_cpu_suggests_bfloat16_or_float32():
    with pytest.raises(ValueError, match=r"float16.*CPU.*bfloat16.*float32"):
        detect.resolve_dtype("float16", "cpu")


def test_unknown_dtype_lists_the_choices():
    with pytest.raises(ValueError, match=r"Unknown dtype 'int8' \(training.dtype\); choose one of auto, float32, bfloat16, float16"):
        detect.resolve_dtype("int8", "cpu")


# --- /proc/cpuinfo parsing -------------------------------------------------------------------


def test_x86_cpuinfo_flags(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text(
        "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\n"
        "flags\t\t: fpu sse avx avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n\n"
        "processor\t: 1\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\nflags\t\t: fpu\n"
    )
    cpu = detect.detect_cpu(info)
    assert cpu.model_name == "Intel(R) Xeon(R) Platinum 8480+"
    assert (cpu.avx2, cpu.avx512f, cpu.avx512_bf16, cpu.amx_bf16, cpu.arm_bf16) == (True, True, True, True, False)
    assert cpu.native_bf16


def test_arm_cpuinfo_features(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\nCPU implementer\t: 0x41\n")
    cpu = detect.detect_cpu(info)
    assert cpu.arm_bf16 and cpu.native_bf16
    assert not (cpu.avx2 or cpu.avx512f)
    assert cpu.model_name  # from platform when cpuinfo has no model line


def test_without_cpuinfo_uses_torch_vector_capability(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    cpu = detect.detect_cpu(tmp_path / "missing")
    assert cpu.avx2 and not cpu.avx512f and not cpu.native_bf16
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    cpu = detect.detect_cpu(tmp_path / "missing")
    assert cpu.avx2 and cpu.avx512f


# --- a pretend machine with two CUDA GPUs ---------------------------------------------------


def test_cuda_devices_are_listed_before_the_cpu(fake_cuda):
    devices = detect.detect_devices()
    assert [d.name for d in devices] == ["cuda:0", "cuda:1", "cpu"]
    t4, a100 = devices[0], devices[1]
    assert (t4.display_name, t4.compute_capability, t4.supports_bf16) == ("Fake T4", (7, 5), False)
    assert (a100.free_memory, a100.total_memory, a100.supports_bf16) == (30 * 1024**3, 40 * 1024**3, True)
    assert detect.available_device_names() == ["cuda", "cuda:0", "cuda:1", "cpu"]


def test_auto_picks_the_gpu_with_most_free_memory(fake_cuda):
    assert detect.recommended_device() == "cuda:1"
    assert detect.resolve_device("auto") == torch.device("cuda", 1)
    fake_cuda[0]["free"] = fake_cuda[1]["free"]  # a tie goes to the lower index
    assert detect.recommended_device() == "cuda:0"


def test_explicit_cuda_devices(fake_cuda):
    assert detect.resolve_device("cuda") == torch.device("cuda", 0)
    assert detect.resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(ValueError, match=r"'cuda:2'.*cuda, cuda:0, cuda:1, cpu"):
        detect.resolve_device("cuda:2")


def test_cuda_dtype_rules(fake_cuda):
    assert detect.recommended_dtype("cuda:1") == torch.bfloat16  # compute 8.0
    assert detect.recommended_dtype("cuda:0") == torch.float16  # 7.5: tensor cores, no bf16
    assert detect.recommended_dtype("cuda") == torch.float16  # the current device, 0
    fake_cuda[0]["capability"] = (6, 1)
    assert detect.recommended_dtype("cuda:0") == torch.float32  # Pascal: slow float16
    assert detect.resolve_dtype("float16", "cuda:0") == torch.float16
    assert detect.resolve_dtype("bfloat16", "cuda:1") == torch.bfloat16
    with pytest.raises(ValueError, match=r"bfloat16.*capability 8.0.*cuda:0.*float16, float32 or auto"):
        detect.resolve_dtype("bfloat16", "cuda:0")


def test_rocm_gpus_support_bf16(fake_cuda, monkeypatch):
    monkeypatch.setattr(torch.version, "hip", "6.2")
    assert detect.detect_devices()[0].supports_bf16
    assert detect.recommended_dtype("cuda:0") == torch.bfloat16


def test_busy_gpu_still_listed_without_free_memory(fake_cuda, monkeypatch):
    def busy(index=None):
        raise RuntimeError("CUDA error: all CUDA-capable devices are busy or unavailable")

    monkeypatch.setattr(torch.cuda, "mem_get_info", busy)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: type("P", (), {"total_memory": 8 * 1024**3})())
    gpu = detect.detect_devices()[0]
    assert (gpu.free_memory, gpu.total_memory) == (None, 8 * 1024**3)


# --- a pretend Mac with Apple's MPS -----------------------------------------------------------


@pytest.fixture
def fake_mps(monkeypatch):
    """Pretend torch sees Apple's MPS (no CUDA); ``state.macos14`` and ``state.bf16_runs`` (the
    measured bfloat16 matmul) set bfloat16 support."""
    state = {"macos14": True, "bf16_runs": True}
    monkeypatch.setattr(detect, "bf16_matmul_works", lambda device: state["bf16_runs"])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    monkeypatch.setattr(torch.backends.mps, "get_name", lambda: "M3 Max")
    monkeypatch.setattr(torch.backends.mps, "is_macos_or_newer", lambda major, minor: state["macos14"])
    monkeypatch.setattr(torch.mps, "recommended_max_memory", lambda: 24 * 1024**3)
    monkeypatch.setattr(torch.mps, "driver_allocated_memory", lambda: 4 * 1024**3)
    return state


def test_mps_is_listed_and_recommended(fake_mps):
    mps, cpu = detect.detect_devices()
    assert (mps.name, mps.kind, mps.display_name) == ("mps", "mps", "Apple M3 Max (MPS)")
    assert (mps.total_memory, mps.free_memory, mps.supports_bf16) == (24 * 1024**3, 20 * 1024**3, True)
    assert cpu.name == "cpu"
    assert detect.available_device_names() == ["mps", "cpu"]
    assert detect.resolve_device("auto") == torch.device("mps")
    assert detect.recommended_dtype("mps") == torch.bfloat16


def test_mps_whose_bfloat16_matmul_fails_uses_float16_even_on_macos_14(fake_mps):
    fake_mps["bf16_runs"] = False
    assert detect.detect_devices()[0].supports_bf16 is False
    assert detect.recommended_dtype("mps") == torch.float16
    with pytest.raises(ValueError, match=r"bfloat16.*working bfloat16 matmul"):
        detect.resolve_dtype("bfloat16", "mps")


def test_the_bfloat16_probe_runs_the_kernels_it_stands_for():
    detect.bf16_matmul_works.cache_clear()
    assert detect.bf16_matmul_works("cpu") is True  # runs, with its backward, and agrees with float32
    assert detect.bf16_matmul_works("meta") is False  # kernels that give no numbers do not count
    detect.bf16_matmul_works.cache_clear()


def test_mps_before_macos_14_uses_float16(fake_mps):
    fake_mps["macos14"] = False
    assert detect.recommended_dtype("mps") == torch.float16
    assert detect.resolve_dtype("float16", "mps") == torch.float16
    with pytest.raises(ValueError, match=r"bfloat16.*macOS 14\+ for MPS"):
        detect.resolve_dtype("bfloat16", "mps")
