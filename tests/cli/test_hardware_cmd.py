"""``senior-intern hardware``: prints devices, the recommendation, the CPU and one reading."""

from __future__ import annotations

import psutil
import pytest
import torch

from senior_intern.cli import main
from senior_intern.hardware import monitor as monitor_module
from senior_intern.hardware.metrics import GpuMetrics, HardwareMetrics, format_bytes

GIB = 1024**3


def test_hardware_prints_cpu_devices_and_usage(capsys):
    assert main(["hardware", "--interval", "0"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    cpu_line = next(line for line in lines if line.startswith("CPU: "))
    assert f"{psutil.cpu_count(logical=True)} logical cores" in cpu_line
    assert "AVX2 " in cpu_line and "AMX-BF16 " in cpu_line
    assert lines[0] == "Devices:"
    assert any(line.strip().startswith("cpu ") for line in lines)
    assert any(line.startswith("Recommended: device ") for line in lines)
    ram_line = next(line for line in lines if line.startswith("RAM: "))
    assert f"of {format_bytes(psutil.virtual_memory().total)}" in ram_line
    assert any(line.startswith("CPU use: system ") for line in lines)


@pytest.mark.skipif(
    torch.cuda.is_available() or torch.backends.mps.is_available(), reason="the note is for CPU-only machines"
)
def test_cpu_only_recommendation_mentions_the_measurement(capsys):
    main(["hardware", "--interval", "0"])
    out = capsys.readouterr().out
    assert "Recommended: device cpu, dtype " in out
    assert "matmuls measured" in out


def test_gpu_readings_are_printed(capsys, monkeypatch):
    sample = HardwareMetrics(
        cpu_utilization=12.5,
        process_cpu_utilization=99.0,
        ram_used=4 * GIB,
        ram_total=16 * GIB,
        process_rss=GIB,
        gpus=(
            GpuMetrics(index=0, name="Fake A100", utilization=87, memory_used=60 * GIB, memory_total=80 * GIB, temperature=71, power_watts=312.5),
            GpuMetrics(index=1, name="Fake T4", memory_used=GIB, memory_total=16 * GIB),
        ),
        torch_allocated=5 * GIB,
        torch_reserved=6 * GIB,
    )
    monkeypatch.setattr(monitor_module.HardwareMonitor, "sample", lambda self: sample)
    assert main(["hardware", "--interval", "0"]) == 0
    out = capsys.readouterr().out
    assert "CPU use: system 12.5%, this process 99.0%" in out
    assert "RAM: 4.00 GB used of 16.00 GB (25.0%), this process 1.00 GB" in out
    assert "GPU 0 Fake A100: utilisation 87.0%, memory 60.00 GB / 80.00 GB, 71 C, 312 W" in out
    assert "GPU 1 Fake T4: utilisation -, memory 1.00 GB / 16.00 GB, -, -" in out
    assert "torch allocator: 5.00 GB allocated, 6.00 GB reserved" in out


def test_negative_interval_is_a_user_error(capsys):
    assert main(["hardware", "--interval", "-1"]) == 2
    assert "--interval must be >= 0" in capsys.readouterr().err
