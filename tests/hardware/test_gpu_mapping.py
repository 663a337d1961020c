"""Several GPUs and MPS (issue #16, items 7 and 8): NVML numbered as torch numbers GPUs under
CUDA_VISIBLE_DEVICES, RNG restored on a machine with fewer GPUs, MPS RNG and cache."""

from __future__ import annotations

import pynvml
import pytest
import torch

from senior_intern.hardware import detect
from senior_intern.hardware.monitor import HardwareMonitor, visible_nvml_indices
from senior_intern.training import checkpoint as ckpt

UUIDS = ["GPU-aaaa-1111", "GPU-bbbb-2222"]


@pytest.mark.parametrize(("visible", "expected"), [
    (None, [0, 1]), ("1", [1]), ("1,0", [1, 0]), ("", []), ("0,7,1", [0]), ("GPU-bbbb", [1]),
    ("GPU-bbbb,GPU-aaaa-1111", [1, 0]), ("GPU-", []), ("1,1", [1]), ("nonsense", []),
])
def test_visible_nvml_indices_follow_cuda_visible_devices(visible, expected) -> None:
    assert visible_nvml_indices(2, visible, lambda: UUIDS) == expected


def test_monitor_numbers_gpus_as_torch_does(fake_nvml, monkeypatch) -> None:
    monkeypatch.setattr(pynvml, "nvmlDeviceGetUUID", lambda h: UUIDS[h].encode(), raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    with HardwareMonitor(use_nvml=True) as monitor:
        gpus = monitor.sample().gpus
    assert [(g.index, g.name) for g in gpus] == [(0, "NVIDIA Fake T4")]  # torch's cuda:0 is NVML GPU 1
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-bbbb,GPU-aaaa")
    with HardwareMonitor(use_nvml=True) as monitor:
        assert [g.name for g in monitor.sample().gpus] == ["NVIDIA Fake T4", "NVIDIA Fake A100"]


def test_monitor_follows_the_run_device(fake_cuda) -> None:
    monitor = HardwareMonitor(use_nvml=False)
    monitor.use_device(torch.device("cuda", 1))
    assert [g.name for g in monitor.sample().gpus] == ["Fake A100"]


def test_rng_saved_on_two_gpus_restores_on_one(monkeypatch) -> None:
    restored: list[int] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda states: pytest.fail("would index a missing GPU"))
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, index: restored.append(index))
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    state = {"python": __import__("random").getstate(), "torch": torch.get_rng_state(),
             "cuda": [torch.zeros(16, dtype=torch.uint8), torch.ones(16, dtype=torch.uint8)]}
    ckpt.restore_rng_state(state)
    assert restored == [0]


def test_mps_rng_is_saved_and_restored(monkeypatch) -> None:
    saved = torch.arange(8, dtype=torch.uint8)
    got: list[torch.Tensor] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    monkeypatch.setattr(torch.mps, "get_rng_state", lambda: saved)
    monkeypatch.setattr(torch.mps, "set_rng_state", lambda s: got.append(s))
    state = ckpt.capture_rng_state()
    assert torch.equal(state["mps"], saved)
    ckpt.restore_rng_state(state)
    assert len(got) == 1 and torch.equal(got[0], saved)


def test_end_of_run_empties_the_mps_cache(monkeypatch) -> None:
    emptied: list[str] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    monkeypatch.setattr(torch.mps, "empty_cache", lambda: emptied.append("mps"))
    detect.empty_device_caches()
    assert emptied == ["mps"]


def test_free_gpu_memory_comes_from_nvml_without_cuda_contexts(fake_nvml, fake_cuda, monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda i=None: pytest.fail("mem_get_info creates a CUDA context"))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    cuda = [d for d in detect.detect_devices() if d.kind == "cuda"]
    gib = 1024**3
    assert [(d.name, d.free_memory, d.total_memory) for d in cuda] == [("cuda:0", 20 * gib, 80 * gib), ("cuda:1", 14 * gib, 16 * gib)]
    assert fake_nvml.calls["nvmlInit"] == fake_nvml.calls["nvmlShutdown"] == 1


def test_without_nvml_free_memory_falls_back_to_torch(no_nvml_library, fake_cuda) -> None:
    cuda = [d for d in detect.detect_devices() if d.kind == "cuda"]
    assert [d.free_memory for d in cuda] == [fake_cuda[0]["free"], fake_cuda[1]["free"]]


@pytest.fixture
def no_nvml_library(monkeypatch):
    def fail():
        raise pynvml.NVMLError(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)

    monkeypatch.setattr(pynvml, "nvmlInit", fail)
