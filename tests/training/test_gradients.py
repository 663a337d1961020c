"""Gradient clipping, and the session's accumulation normalised by the step's valid tokens."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from senior_intern.config import TrainingJob
from senior_intern.training.control import TrainingControl
from senior_intern.training.engine import Trainer
from senior_intern.training.events import Progress
from senior_intern.training.gradients import clip_grad_norm


def _params(*grads: list[float] | None) -> list[nn.Parameter]:
    out = []
    for g in grads:
        p = nn.Parameter(torch.zeros(len(g) if g is not None else 2))
        p.grad = torch.tensor(g) if g is not None else None
        out.append(p)
    return out


def _norm(params: list[nn.Parameter]) -> float:
    return math.sqrt(sum(float((p.grad.double() ** 2).sum()) for p in params if p.grad is not None))


def test_clip_returns_pre_clip_norm_and_clips_to_max_norm() -> None:
    params = _params([3.0, 0.0], [0.0, 4.0], None)  # global norm 5
    assert clip_grad_norm(params, 1.0) == pytest.approx(5.0)
    assert _norm(params) == pytest.approx(1.0, rel=1e-5)
    torch.testing.assert_close(params[0].grad, torch.tensor([0.6, 0.0]), rtol=1e-5, atol=1e-6)
    assert params[2].grad is None


def test_clip_leaves_small_gradients_and_disabled_clipping_alone() -> None:
    params = _params([0.3, 0.4])
    assert clip_grad_norm(params, 1.0) == pytest.approx(0.5)
    assert torch.equal(params[0].grad, torch.tensor([0.3, 0.4]))
    params = _params([30.0, 40.0])
    assert clip_grad_norm(params, 0.0) == pytest.approx(50.0)  # 0 disables clipping
    assert torch.equal(params[0].grad, torch.tensor([30.0, 40.0]))
    assert clip_grad_norm(_params(None), 1.0) == 0.0


def test_clip_does_not_touch_non_finite_gradients() -> None:
    params = _params([float("inf"), 1.0], [2.0, 2.0])
    assert math.isinf(clip_grad_norm(params, 1.0))
    assert torch.equal(params[1].grad, torch.tensor([2.0, 2.0]))
    params = _params([float("nan"), 1.0])
    assert math.isnan(clip_grad_norm(params, 1.0))


# --- accumulation, through the engine ----------------------------------------------------------


def _first_step_grad_norm(job: TrainingJob, batch_size: int, accumulation: int) -> float:
    job.training.batch_size, job.training.gradient_accumulation_steps = batch_size, accumulation
    job.output_dir = str(Path(job.output_dir).with_name(f"runs-{batch_size}x{accumulation}"))
    norms: list[float] = []

    def on_event(e) -> None:
        if isinstance(e, Progress) and e.global_step == 1:
            norms.append(e.metrics.grad_norm)
            control.cancel()

    control = TrainingControl()
    Trainer().run(job, control, on_event)
    assert len(norms) == 1
    return norms[0]


def test_accumulated_gradient_equals_one_big_batch(tiny_job: TrainingJob, tmp_path: Path) -> None:
    """4 micro-batches of 1 row give the gradient of 1 batch of 4: each micro-batch's loss sum is
    divided by the valid tokens of the whole step, not by its own (a mean of means would weight
    the short completions' tokens more)."""
    words = ["def", "add", "return", "class", "Point", "print", "import", "hello", "world", "self"]
    path = tmp_path / "uneven.jsonl"
    with path.open("w") as fh:
        for i in range(32):  # completions of 1 to 7 words: uneven token counts per row
            completion = " ".join(words[(i + k) % len(words)] for k in range(1 + i % 7))
            fh.write(json.dumps({"prompt": f"{words[i % len(words)]} ->", "completion": " " + completion}) + "\n")
    tiny_job.dataset_path = str(path)
    tiny_job.lora.dropout = 0.0  # the same forward whatever the batch shape
    big = _first_step_grad_norm(tiny_job, batch_size=4, accumulation=1)
    accumulated = _first_step_grad_norm(tiny_job, batch_size=1, accumulation=4)
    assert big > 0
    assert accumulated == pytest.approx(big, rel=1e-4)
