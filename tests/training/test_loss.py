"""Causal-LM loss: hand-computed values and the chunked path against the plain one."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from senior_intern.training.loss import (
    causal_lm_loss,
    chunked_causal_lm_loss,
)

B, T, H, V = 3, 9, 16, 37


def _ce(row: list[float], target: int) -> float:
    """-log softmax(row)[target], by hand."""
    return math.log(sum(math.exp(x) for x in row)) - row[target]


def test_masked_loss_matches_hand_computation() -> None:
    logits = torch.tensor([
        [[1.0, 2.0, 3.0], [0.5, -1.0, 2.0], [9.0, 9.0, 9.0]],
        [[0.0, 0.0, 0.0], [2.0, 1.0, 0.0], [4.0, 4.0, 4.0]],
    ])
    # Position t predicts label t+1; label 0 and -100 never count; the last position predicts nothing.
    labels = torch.tensor([[7, 2, -100], [-100, 0, 1]])
    expected = [_ce([1.0, 2.0, 3.0], 2), _ce([0.0, 0.0, 0.0], 0), _ce([2.0, 1.0, 0.0], 1)]

    assert causal_lm_loss(logits, labels, reduction="sum").item() == pytest.approx(sum(expected), rel=1e-6)
    assert causal_lm_loss(logits, labels).item() == pytest.approx(sum(expected) / 3, rel=1e-6)
    per_position = causal_lm_loss(logits, labels, reduction="none")
    assert per_position.shape == (2, 2)
    torch.testing.assert_close(
        per_position, torch.tensor([[expected[0], 0.0], [expected[1], expected[2]]]), rtol=1e-6, atol=1e-6
    )


def test_plain_loss_rejects_bad_arguments() -> None:
    logits, labels = torch.zeros(1, 3, 4), torch.zeros(1, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="reduction"):
        causal_lm_loss(logits, labels, reduction="avg")
    with pytest.raises(ValueError, match="logits"):
        causal_lm_loss(torch.zeros(1, 4, 4), labels)
    with pytest.raises(ValueError, match="labels"):
        causal_lm_loss(logits, torch.zeros(3, dtype=torch.long))


def _labels(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, V, (B, T), generator=g)
    labels[0, :4] = -100  # a prompt
    labels[1, 2] = labels[1, 5] = -100  # scattered
    labels[2, 6:] = -100  # padding
    return labels


class _LoraHead(nn.Module):
    """A frozen linear head plus a trainable low-rank update: a generic (non-Linear) head."""

    def __init__(self, base: nn.Linear) -> None:
        super().__init__()
        self.base = base
        self.a = nn.Parameter(torch.randn(4, H) * 0.1)
        self.b = nn.Parameter(torch.randn(V, 4) * 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + x @ self.a.t() @ self.b.t()


def _head(kind: str) -> tuple[nn.Module, list[nn.Parameter]]:
    torch.manual_seed(1)
    base = nn.Linear(H, V, bias=kind == "linear_bias")
    if kind == "frozen":
        base.requires_grad_(False)
        return base, []
    if kind in ("linear", "linear_bias"):
        return base, list(base.parameters())
    base.requires_grad_(False)
    head = _LoraHead(base)
    return head, [head.a, head.b]


@pytest.mark.parametrize("kind", ["frozen", "linear", "linear_bias", "generic"])
@pytest.mark.parametrize("chunk_size", [1, 4, 7, 1000])
def test_chunked_loss_equals_plain_in_value_and_gradient(kind: str, chunk_size: int) -> None:
    head, head_params = _head(kind)
    labels = _labels()
    hidden = torch.randn(B, T, H, requires_grad=True)
    plain = causal_lm_loss(head(hidden), labels, reduction="sum")
    expected = torch.autograd.grad(plain, [hidden, *head_params])

    out = chunked_causal_lm_loss(hidden, head, labels, chunk_size=chunk_size)
    grads = torch.autograd.grad(out.loss_sum, [hidden, *head_params])

    assert out.n_valid == int((labels[:, 1:] != -100).sum()) == 16
    assert out.loss_sum.dtype == torch.float32
    torch.testing.assert_close(out.loss_sum, plain, rtol=1e-5, atol=1e-5)
    for got, want in zip(grads, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    targets = labels[:, 1:]
    correct = (head(hidden)[:, :-1].argmax(-1) == targets) & (targets != -100)
    assert int(out.n_correct) == int(correct.sum())


def test_chunked_counts_correct_predictions() -> None:
    head = nn.Linear(H, V, bias=False)
    hidden = torch.randn(1, 4, H)
    labels = head(hidden).argmax(-1).roll(1, dims=1)  # label t+1 = argmax at t
    labels[0, 0] = 0
    labels[0, 2] = (labels[0, 2] + 1) % V  # one wrong prediction
    with torch.no_grad():
        out = chunked_causal_lm_loss(hidden, head, labels, chunk_size=2)
    assert out.n_valid == 3 and int(out.n_correct) == 2


@pytest.mark.parametrize("kind", ["linear_bias", "generic"])
def test_chunked_bf16_runs_and_is_close(kind: str) -> None:
    head, _ = _head(kind)
    labels = _labels(3)
    hidden32 = torch.randn(B, T, H, requires_grad=True)
    plain = causal_lm_loss(head(hidden32), labels, reduction="sum")
    (expected,) = torch.autograd.grad(plain, hidden32)

    head = head.to(torch.bfloat16)
    hidden = hidden32.detach().to(torch.bfloat16).requires_grad_(True)
    out = chunked_causal_lm_loss(hidden, head, labels, chunk_size=4)
    out.loss_sum.backward()

    assert out.loss_sum.dtype == torch.float32
    assert hidden.grad.dtype == torch.bfloat16 and torch.isfinite(hidden.grad).all()
    torch.testing.assert_close(out.loss_sum, plain, rtol=2e-2, atol=0.0)
    torch.testing.assert_close(hidden.grad.float(), expected, rtol=0.05, atol=0.02)
    trained = [p for p in head.parameters() if p.requires_grad]
    assert trained and all(p.grad.dtype == torch.bfloat16 and torch.isfinite(p.grad).all() for p in trained)


@pytest.mark.parametrize("kind", ["linear_bias", "generic"])
def test_all_ignored_labels_give_zero_loss_and_zero_gradients(kind: str) -> None:
    head, head_params = _head(kind)
    hidden = torch.randn(B, T, H, requires_grad=True)
    labels = torch.full((B, T), -100)
    labels[:, 0] = 5  # label 0 is never a target
    out = chunked_causal_lm_loss(hidden, head, labels, chunk_size=4)
    out.loss_sum.backward()
    assert out.n_valid == 0 and out.loss_sum.item() == 0.0 and int(out.n_correct) == 0
    assert torch.count_nonzero(hidden.grad) == 0
    for p in head_params:
        assert p.grad is not None and torch.count_nonzero(p.grad) == 0


def test_no_grad_evaluation_matches_and_builds_no_graph() -> None:
    head, _ = _head("linear")
    hidden, labels = torch.randn(B, T, H), _labels(5)
    with torch.no_grad():
        out = chunked_causal_lm_loss(hidden, head, labels, chunk_size=5)
        plain = causal_lm_loss(head(hidden), labels, reduction="sum")
    assert out.loss_sum.grad_fn is None
    torch.testing.assert_close(out.loss_sum, plain, rtol=1e-5, atol=1e-5)


class _LargestTensor(TorchDispatchMode):
    """Records the largest number of elements any operation produced."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


@pytest.mark.parametrize("kind", ["linear", "generic"])
def test_chunked_loss_never_holds_more_than_a_chunk_of_logits(kind: str) -> None:
    head, _ = _head(kind)
    hidden = torch.randn(B, T, H, requires_grad=True)
    labels = _labels()
    with _LargestTensor() as mode:
        chunked_causal_lm_loss(hidden, head, labels, chunk_size=4).loss_sum.backward()
    assert mode.largest <= max(4 * V, V * H)  # one chunk of logits, or the head weight's gradient
    with _LargestTensor() as plain:
        causal_lm_loss(head(hidden), labels, reduction="sum").backward()
    assert plain.largest >= B * (T - 1) * V  # the plain path does hold them all


def test_generic_head_sees_only_valid_rows_in_chunks() -> None:
    seen: list[int] = []
    base = nn.Linear(H, V)

    class Recording(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(x.shape[0])
            return base(x)

    labels = _labels()
    with torch.no_grad():
        chunked_causal_lm_loss(torch.randn(B, T, H), Recording(), labels, chunk_size=4)
    assert seen == [4, 4, 4, 4]  # 16 valid targets of 24 shifted positions


def test_chunked_loss_rejects_bad_arguments() -> None:
    head = nn.Linear(H, V)
    hidden, labels = torch.randn(B, T, H), _labels()
    with pytest.raises(ValueError, match="loss_chunk_size"):
        chunked_causal_lm_loss(hidden, head, labels, chunk_size=0)
    with pytest.raises(ValueError, match="hidden states"):
        chunked_causal_lm_loss(hidden[:, :-1], head, labels)
    bad = labels.clone()
    bad[1, 3] = V
    with pytest.raises(ValueError, match="outside the vocabulary"):
        chunked_causal_lm_loss(hidden, head, bad)
