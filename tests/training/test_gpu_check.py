"""The prepared GPU check runs on the CPU as a smoke check (its parity section, tiny shapes)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_check_parity_section_passes_on_cpu(tmp_path, monkeypatch) -> None:
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    code = gpu_check.main(["--device", "cpu", "--out", str(tmp_path), "--skip", "e2e", "oom", "throughput", "estimate"])
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    names = [c["name"] for c in report["checks"]]
    assert code == 0 and report["failed"] == [], report["failed"]
    assert "parity bfloat16 fused_packed" in names and "parity float32 fused LoRA linear" in names
    assert (tmp_path / "gpu_check.log").read_text().count("PASS") == len(names)
