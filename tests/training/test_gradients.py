"""Gradient clipping, health checks and accumulation normalised by the step's valid tokens."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from senior_intern.training.gradients import (
    GradientAccumulator,
    accumulation_normaliser,
    check_gradient_health,
    clip_grad_norm,
    zero_grad,
)
from senior_intern.training.loss import chunked_causal_lm_loss


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


def test_health_of_normal_gradients() -> None:
    params = _params([0.5, -2.0], [1.0, 0.0], None)
    params.append(nn.Parameter(torch.zeros(3, dtype=torch.bfloat16)))
    params[-1].grad = torch.tensor([0.0, -7.0, 1.0], dtype=torch.bfloat16)
    h = check_gradient_health(params)
    assert h.is_healthy and not h.has_nan and not h.has_inf
    assert h.max_abs == pytest.approx(7.0)
    assert (h.total_parameters, h.parameters_with_grad) == (4, 3)


@pytest.mark.parametrize(
    ("grads", "nan", "inf"),
    [
        ([[1.0, float("nan")], [2.0, 3.0]], True, False),
        ([[1.0, 2.0], [float("-inf"), 3.0]], False, True),
        ([[float("nan"), float("inf")], [2.0, 3.0]], True, True),  # both in one tensor
        ([[float("nan"), 1.0], [float("inf"), 3.0]], True, True),
    ],
)
def test_health_flags_nan_and_inf(grads: list[list[float]], nan: bool, inf: bool) -> None:
    h = check_gradient_health(_params(*grads))
    assert (h.has_nan, h.has_inf, h.is_healthy) == (nan, inf, False)
    assert math.isfinite(h.max_abs)


def test_health_flags_huge_gradients_and_handles_no_gradients() -> None:
    h = check_gradient_health(_params([2e6, 1.0]))
    assert not h.is_healthy and not h.has_nan and not h.has_inf and h.max_abs == pytest.approx(2e6)
    assert check_gradient_health(_params([2e6, 1.0]), max_abs_threshold=1e7).is_healthy
    empty = check_gradient_health(_params(None, None))
    assert empty.is_healthy and empty.parameters_with_grad == 0 and empty.total_parameters == 2


def test_zero_grad_sets_gradients_to_none() -> None:
    params = _params([1.0], [2.0])
    zero_grad(params)
    assert all(p.grad is None for p in params)


# --- accumulation -------------------------------------------------------------------------

V, H, T = 23, 8, 10


class _TinyLM(nn.Module):
    """Embedding -> tanh -> trainable linear head: enough to have real gradients."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(V, H)
        self.head = nn.Linear(H, V, bias=False)

    def loss_sum(self, ids: torch.Tensor, labels: torch.Tensor):
        return chunked_causal_lm_loss(torch.tanh(self.embed(ids)), self.head, labels, chunk_size=3)


def _micro_batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(7)
    batches = []
    for valid_from in (1, 6, 8):  # 9, 4 and 2 valid targets: uneven on purpose
        ids = torch.randint(0, V, (1, T), generator=g)
        labels = ids.clone()
        labels[:, :valid_from] = -100
        batches.append((ids, labels))
    return batches


def _grads(model: nn.Module) -> list[torch.Tensor]:
    grads = [p.grad.clone() for p in model.parameters()]
    zero_grad(model.parameters())
    return grads


def test_accumulated_gradient_equals_one_big_batch() -> None:
    model, batches = _TinyLM(), _micro_batches()
    all_labels = [labels for _, labels in batches]
    total = accumulation_normaliser(all_labels)
    assert total == 9 + 4 + 2

    big_ids = torch.cat([ids for ids, _ in batches])
    big_labels = torch.cat(all_labels)
    out = model.loss_sum(big_ids, big_labels)
    (out.loss_sum / out.n_valid).backward()
    expected = _grads(model)

    acc = GradientAccumulator(len(batches))
    acc.begin_step(total)
    stepped = []
    for ids, labels in batches:
        acc.scale(model.loss_sum(ids, labels).loss_sum).backward()
        stepped.append(acc.accumulate())
    assert stepped == [False, False, True]
    accumulated = _grads(model)
    for got, want in zip(accumulated, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=0.0, atol=1e-6)

    # The mean of per-micro-batch means weights the 2-token batch like the 9-token one: different.
    for ids, labels in batches:
        out = model.loss_sum(ids, labels)
        (out.loss_sum / out.n_valid / len(batches)).backward()
    mean_of_means = _grads(model)
    assert max(float((a - b).abs().max()) for a, b in zip(mean_of_means, expected)) > 1e-3


def test_accumulator_bookkeeping() -> None:
    acc = GradientAccumulator(3)
    assert acc.current_step == 0 and not acc.should_step
    assert acc.accumulate() is False and acc.current_step == 1
    assert acc.accumulate() is False and acc.should_step
    assert acc.accumulate() is True and acc.current_step == 0
    acc.begin_step(4)
    assert acc.total_tokens == 4
    assert acc.scale(torch.tensor(2.0)).item() == pytest.approx(0.5)
    acc.accumulate()
    acc.reset()
    assert acc.current_step == 0 and acc.total_tokens == 0
    assert acc.scale(torch.tensor(2.0)).item() == 0.0  # no tokens: zero, not a division by 0
    assert GradientAccumulator(1).should_step


def test_accumulator_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="gradient_accumulation_steps"):
        GradientAccumulator(0)
    with pytest.raises(ValueError, match="total_valid_tokens"):
        GradientAccumulator(2).begin_step(-1)
