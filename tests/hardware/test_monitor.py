"""HardwareMonitor: real readings on this machine, a missing NVML, a fake two-GPU NVML, failing
NVML calls, shutdown exactly once, and torch's own allocator figures."""

from __future__ import annotations

import gc
import subprocess
import sys
import time

import psutil
import pynvml
import pytest
import torch

from senior_intern.hardware.monitor import HardwareMonitor

GIB = 1024**3


@pytest.fixture
def no_pynvml(monkeypatch):
    """``import pynvml`` raises ImportError, as without nvidia-ml-py installed."""
    monkeypatch.setitem(sys.modules, "pynvml", None)


def test_sample_on_this_machine_is_sane():
    with HardwareMonitor() as monitor:
        time.sleep(0.05)
        sample = monitor.sample()
    cores = psutil.cpu_count(logical=True)
    assert sample.ram_total == psutil.virtual_memory().total
    assert 0 < sample.ram_used < sample.ram_total
    assert sample.process_rss > 0
    assert 0 <= sample.cpu_utilization <= 100
    assert 0 <= sample.process_cpu_utilization <= 100 * cores
    assert abs(sample.timestamp - time.time()) < 5
    if not monitor.nvml_active and not torch.cuda.is_initialized():
        assert sample.gpus == () and sample.gpu_utilization is None


def test_process_cpu_reflects_work_done_between_samples():
    monitor = HardwareMonitor(use_nvml=False)
    end = time.process_time() + 0.15
    while time.process_time() < end:  # burn CPU in this process
        sum(range(1000))
    assert monitor.sample().process_cpu_utilization > 10


def test_monitor_module_does_not_import_torch():
    code = "import sys, senior_intern.hardware.monitor as m; m.HardwareMonitor().sample(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "False"


def test_without_pynvml_module_gpu_fields_are_absent(no_pynvml):
    with HardwareMonitor() as monitor:
        sample = monitor.sample()
        assert not monitor.nvml_active
    assert sample.gpus == ()
    assert sample.gpu_memory_total is None and sample.gpu_memory_utilization == 0.0
    assert sample.ram_total > 0


def test_without_nvml_library_gpu_fields_are_absent(fake_nvml, monkeypatch):
    def missing():
        raise pynvml.NVMLError_LibraryNotFound()

    monkeypatch.setattr(pynvml, "nvmlInit", missing)
    monitor = HardwareMonitor()
    assert monitor.sample().gpus == ()
    assert monitor.sample().gpus == ()
    monitor.close()
    assert not monitor.nvml_active
    assert "nvmlShutdown" not in fake_nvml.calls  # nothing was started, so nothing to release


def test_fake_nvml_fills_every_gpu(fake_nvml):
    with HardwareMonitor("cpu") as monitor:  # training on the CPU: no torch allocator figures
        sample = monitor.sample()
        assert monitor.nvml_active
    a100, t4 = sample.gpus
    assert (a100.index, a100.name, a100.utilization, a100.temperature, a100.power_watts) == (0, "NVIDIA Fake A100", 87.0, 71.0, 312.5)
    assert (a100.memory_used, a100.memory_total) == (60 * GIB, 80 * GIB)
    assert (t4.index, t4.name, t4.utilization, t4.temperature, t4.power_watts) == (1, "NVIDIA Fake T4", 12.0, 45.0, 70.0)
    assert (t4.memory_used, t4.memory_total) == (2 * GIB, 16 * GIB)
    assert sample.gpu_utilization == 87.0 and sample.gpu_memory_utilization == 75.0  # the first GPU
    assert sample.torch_allocated is None


def test_nvml_starts_once_lazily(fake_nvml):
    monitor = HardwareMonitor()
    assert "nvmlInit" not in fake_nvml.calls
    for _ in range(3):
        monitor.sample()
    assert fake_nvml.calls["nvmlInit"] == 1
    assert fake_nvml.calls["nvmlDeviceGetCount"] == 1
    monitor.close()


def test_failing_nvml_call_disables_only_that_reading(fake_nvml):
    with HardwareMonitor() as monitor:
        assert monitor.sample().gpus[1].power_watts == 70.0
        fake_nvml.fail["nvmlDeviceGetPowerUsage"] = {1}
        fake_nvml.fail["nvmlDeviceGetTemperature"] = {0}
        calls_before = fake_nvml.calls["nvmlDeviceGetPowerUsage"]
        first, second = monitor.sample().gpus
        assert second.power_watts is None and first.power_watts == 312.5
        assert first.temperature is None and second.temperature == 45.0
        assert first.utilization == 87.0 and second.memory_used == 2 * GIB
        fake_nvml.fail.clear()  # even when it would work again, the reading stays off
        first, second = monitor.sample().gpus
        assert second.power_watts is None and first.temperature is None
        # GPU 0 read twice more, GPU 1 once (the failure) and then never again
        assert fake_nvml.calls["nvmlDeviceGetPowerUsage"] == calls_before + 3
        assert monitor.sample().ram_total > 0


def test_nvml_failing_while_listing_gpus_is_released(fake_nvml, monkeypatch):
    def lost():
        raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)

    monkeypatch.setattr(pynvml, "nvmlDeviceGetCount", lost)
    monitor = HardwareMonitor()
    assert monitor.sample().gpus == ()
    assert not monitor.nvml_active
    assert fake_nvml.calls["nvmlShutdown"] == 1
    monitor.close()
    assert fake_nvml.calls["nvmlShutdown"] == 1


def test_close_shuts_nvml_down_once(fake_nvml):
    monitor = HardwareMonitor()
    monitor.sample()
    monitor.close()
    monitor.close()
    assert fake_nvml.calls["nvmlShutdown"] == 1
    after = monitor.sample()  # still usable without NVML, and NVML is not started again
    assert after.ram_total > 0 and fake_nvml.calls["nvmlInit"] == 1
    del monitor
    gc.collect()
    assert fake_nvml.calls["nvmlShutdown"] == 1


def test_context_manager_shuts_down(fake_nvml):
    with HardwareMonitor() as monitor:
        monitor.sample()
    assert fake_nvml.calls["nvmlShutdown"] == 1


def test_forgotten_monitor_shuts_down_when_collected(fake_nvml):
    monitor = HardwareMonitor()
    monitor.sample()
    del monitor
    gc.collect()
    assert fake_nvml.calls["nvmlShutdown"] == 1


def test_shutdown_error_is_ignored(fake_nvml, monkeypatch):
    def gone():
        raise pynvml.NVMLError(pynvml.NVML_ERROR_DRIVER_NOT_LOADED)

    monitor = HardwareMonitor()
    monitor.sample()
    monkeypatch.setattr(pynvml, "nvmlShutdown", gone)
    monitor.close()
    assert not monitor.nvml_active


def test_use_nvml_false_never_touches_nvml(fake_nvml):
    with HardwareMonitor(use_nvml=False) as monitor:
        monitor.sample()
    assert fake_nvml.calls == {}


def test_failing_psutil_leaves_fields_absent(monkeypatch):
    monitor = HardwareMonitor(use_nvml=False)

    def denied(*args, **kwargs):
        raise psutil.AccessDenied()

    monkeypatch.setattr(psutil, "virtual_memory", denied)
    monkeypatch.setattr(psutil, "cpu_percent", denied)
    monkeypatch.setattr(psutil.Process, "cpu_percent", denied)
    sample = monitor.sample()
    assert (sample.ram_total, sample.ram_used, sample.cpu_utilization) == (None, None, None)
    assert (sample.process_cpu_utilization, sample.process_rss) == (None, None)
    assert sample.ram_utilization == 0.0


def test_torch_cuda_figures_without_nvml(no_pynvml, fake_cuda):
    sample = HardwareMonitor().sample()
    (gpu,) = sample.gpus  # only the device in use: no context is created on the others
    assert (gpu.index, gpu.name, gpu.memory_used, gpu.memory_total) == (0, "Fake T4", 13 * GIB, 16 * GIB)
    assert gpu.utilization is None and gpu.temperature is None
    assert (sample.torch_allocated, sample.torch_reserved) == (5 * GIB, 6 * GIB)
    sample = HardwareMonitor("cuda:1").sample()
    assert sample.gpus[0].index == 1 and sample.torch_allocated == 5 * GIB + 1


def test_torch_cuda_figures_with_nvml(fake_nvml, fake_cuda):
    sample = HardwareMonitor(torch.device("cuda", 0)).sample()
    assert len(sample.gpus) == 2 and sample.gpus[0].power_watts == 312.5
    assert sample.torch_reserved == 6 * GIB


def test_cpu_training_reports_no_torch_allocator(no_pynvml, fake_cuda):
    sample = HardwareMonitor("cpu").sample()
    assert sample.torch_allocated is None and sample.gpus == ()


def test_uninitialised_cuda_is_left_alone(no_pynvml, fake_cuda, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    sample = HardwareMonitor().sample()
    assert sample.gpus == () and sample.torch_allocated is None


def test_lost_cuda_device_reports_nothing(no_pynvml, fake_cuda, monkeypatch):
    def lost(index=None):
        raise RuntimeError("CUDA error: device-side assert triggered")

    monkeypatch.setattr(torch.cuda, "mem_get_info", lost)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lost)
    sample = HardwareMonitor().sample()
    assert sample.gpus == () and sample.torch_allocated is None and sample.ram_total > 0


def test_mps_figures_from_torch(no_pynvml, monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    monkeypatch.setattr(torch.mps, "current_allocated_memory", lambda: 3 * GIB)
    monkeypatch.setattr(torch.mps, "driver_allocated_memory", lambda: 4 * GIB)
    monkeypatch.setattr(torch.mps, "recommended_max_memory", lambda: 20 * GIB)
    sample = HardwareMonitor("mps").sample()
    assert (sample.torch_allocated, sample.torch_reserved) == (3 * GIB, 4 * GIB)
    (gpu,) = sample.gpus
    assert (gpu.memory_used, gpu.memory_total) == (4 * GIB, 20 * GIB)


def test_peak_rss_is_this_process_own_not_the_parent_it_was_started_from():
    from senior_intern.hardware.monitor import peak_rss_bytes

    # The parent grows by 600 MiB first; getrusage's ru_maxrss in the child would report that.
    code = (
        "import subprocess, sys\n"
        "big = bytearray(600 * 2**20)\n"
        "for i in range(0, len(big), 4096): big[i] = 1\n"
        "del big\n"
        "child = 'from senior_intern.hardware.monitor import peak_rss_bytes; "
        "b = bytearray(200 * 2**20)\\nfor i in range(0, len(b), 4096): b[i] = 1\\nprint(peak_rss_bytes())'\n"
        "print(subprocess.run([sys.executable, '-c', child], capture_output=True, text=True, check=True).stdout)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    child_peak = int(out.stdout.split()[0])
    assert 200 * 2**20 <= child_peak < 450 * 2**20
    assert peak_rss_bytes() >= psutil.Process().memory_info().rss * 0.99
