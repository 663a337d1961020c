"""``senior-intern hardware``: the devices, the device and dtype "auto" picks, the CPU, and one
reading of what the machine is doing now."""

from __future__ import annotations

import argparse
import time

from senior_intern.hardware.metrics import GpuMetrics, HardwareMetrics, format_bytes


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``hardware`` sub-command."""
    parser = subparsers.add_parser(
        "hardware",
        help="show devices, the recommended device and dtype, and current CPU/GPU/memory use",
        description="Show what this machine can train on and what it is doing now.",
    )
    parser.add_argument(
        "--interval",
        type=float,
        default=0.5,
        metavar="SECONDS",
        help="time over which CPU use is averaged for the reading (default 0.5)",
    )
    parser.set_defaults(func=run)


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}%"


def _gpu_line(gpu: GpuMetrics) -> str:
    """One GPU reading: utilisation, memory, temperature, power (dashes for what is unknown)."""
    temperature = "-" if gpu.temperature is None else f"{gpu.temperature:.0f} C"
    power = "-" if gpu.power_watts is None else f"{gpu.power_watts:.0f} W"
    return (
        f"GPU {gpu.index} {gpu.name}: utilisation {_percent(gpu.utilization)}, memory "
        f"{format_bytes(gpu.memory_used)} / {format_bytes(gpu.memory_total)}, {temperature}, {power}"
    )


def _usage_lines(sample: HardwareMetrics) -> list[str]:
    """The monitor reading as text lines."""
    lines = [
        f"CPU use: system {_percent(sample.cpu_utilization)}, "
        f"this process {_percent(sample.process_cpu_utilization)}",
        f"RAM: {format_bytes(sample.ram_used)} used of {format_bytes(sample.ram_total)} "
        f"({sample.ram_utilization:.1f}%), this process {format_bytes(sample.process_rss)}",
    ]
    lines.extend(_gpu_line(gpu) for gpu in sample.gpus)
    if sample.torch_allocated is not None:
        lines.append(
            f"torch allocator: {format_bytes(sample.torch_allocated)} allocated, "
            f"{format_bytes(sample.torch_reserved)} reserved"
        )
    return lines


def run(args: argparse.Namespace) -> int:
    """Print the hardware report; returns the exit code."""
    if args.interval < 0:
        raise ValueError(f"--interval must be >= 0 seconds, got {args.interval}")
    from senior_intern.hardware import detect
    from senior_intern.hardware.monitor import HardwareMonitor

    with HardwareMonitor() as monitor:  # started first so the CPU reading covers the wait
        started = time.monotonic()
        devices = detect.detect_devices()
        cpu = detect.detect_cpu()
        device = detect.recommended_device()
        dtype = detect.recommended_dtype(device)
        print("Devices:")
        for d in devices:
            capability = f", compute {d.compute_capability[0]}.{d.compute_capability[1]}" if d.compute_capability else ""
            print(
                f"  {d.name:<8} {d.display_name} - {format_bytes(d.total_memory)} total, "
                f"{format_bytes(d.free_memory)} free{capability}, bf16 {_yes(d.supports_bf16)}"
            )
        note = ""
        if device == "cpu":
            note = f" (bfloat16 matmuls measured {detect.cpu_bf16_speedup():.2f}x the speed of float32)"
        print(f"Recommended: device {device}, dtype {str(dtype).removeprefix('torch.')}{note}")
        cores = f"{cpu.physical_cores} physical / " if cpu.physical_cores else ""
        print(
            f"CPU: {cpu.model_name}, {cores}{cpu.logical_cores} logical cores, AVX2 {_yes(cpu.avx2)}, "
            f"AVX-512 {_yes(cpu.avx512f)}, AVX512-BF16 {_yes(cpu.avx512_bf16)}, AMX-BF16 {_yes(cpu.amx_bf16)}"
        )
        time.sleep(max(0.0, args.interval - (time.monotonic() - started)))
        for line in _usage_lines(monitor.sample()):
            print(line)
    return 0
