"""The scale benchmark's synthetic bases open compactly with the demo tokenizer, its header-only
file describes the same model, and its extrapolation is the line through the measured points."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def scale():
    spec = importlib.util.spec_from_file_location("scale_bench", ROOT / "benchmarks" / "scale.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["scale_bench"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_K"])
def test_a_synthetic_base_opens_compact_with_the_demo_tokenizer(scale, demo_gguf: Path, tmp_path: Path, qtype: str) -> None:
    from senior_intern.models import load_base_model
    from senior_intern.models.holding import base_holding
    from senior_intern.models.quantized import FrozenLinear

    shape = scale.Shape("tiny", 256, 2, 4, 2, 512, 49152, qtype, 32)
    path = scale.write_gguf(tmp_path / "tiny.gguf", shape, 2, demo_gguf)
    loaded = load_base_model(path)
    kinds = {m.kind for m in loaded.model.modules() if isinstance(m, FrozenLinear)}
    assert kinds == {qtype} and loaded.info.base_held == "gguf"
    demo = load_base_model(demo_gguf).tokenizer
    text = "def add(a, b):\n    return a + b\n"
    assert loaded.tokenizer(text).input_ids == demo(text).input_ids
    ids = loaded.tokenizer(text, return_tensors="pt").input_ids
    with torch.no_grad():
        logits = loaded.model(ids).logits
    assert torch.isfinite(logits).all() and 0 < logits.std() < 50  # random weights of sane size
    header = scale.write_gguf(tmp_path / "header.gguf", shape, 2, demo_gguf, header_only=True)
    assert header.stat().st_size == path.stat().st_size
    assert base_holding(header) == base_holding(path)


def test_extrapolation_is_the_line_through_the_layer_counts(scale) -> None:
    points = {1: {"peak": 10.0, "s": 1.0}, 2: {"peak": 14.0, "s": 1.5}}
    full = scale.extrapolate(points, 16)
    assert full == {"extrapolated": True, "peak": pytest.approx(70.0), "s": pytest.approx(8.5)}
    assert scale.extrapolate(points, 2) == {"peak": 14.0, "s": 1.5, "extrapolated": False}
    with pytest.raises(ValueError, match="two or more"):
        scale.extrapolate({1: points[1]}, 16)
