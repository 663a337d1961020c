"""Drop positions and drop plans: exact Bernoulli(p) per element, independent, reproducible."""

from __future__ import annotations

import math

import pytest
import torch

from senior_intern.lora.dropout import DropPlan, drop_positions


@pytest.mark.parametrize("p", [0.05, 0.3, 0.9, 1e-4])
def test_each_element_is_dropped_with_probability_p(p):
    generator = torch.Generator().manual_seed(0)
    n, rounds = 200_003, 5
    counts = torch.zeros(n)
    for _ in range(rounds):
        positions = drop_positions(n, p, generator)
        assert positions.dtype == torch.int64
        assert torch.all(positions[1:] > positions[:-1])  # sorted, no repeats
        assert int(positions.min()) >= 0 and int(positions.max()) < n
        counts[positions] += 1
    rate = counts.sum().item() / (n * rounds)
    assert rate == pytest.approx(p, abs=5 * math.sqrt(p * (1 - p) / (n * rounds)))
    # the first and the last elements are as likely as any other (no edge effects)
    edges = counts.view(-1)[:1000].mean().item(), counts.view(-1)[-1000:].mean().item()
    for edge in edges:
        assert edge / rounds == pytest.approx(p, abs=6 * math.sqrt(p * (1 - p) / (1000 * rounds)) + 1e-3)


def test_neighbours_are_independent():
    p, n = 0.3, 400_000
    dropped = torch.zeros(n)
    dropped[drop_positions(n, p, torch.Generator().manual_seed(1))] = 1
    both = (dropped[:-1] * dropped[1:]).mean().item()
    assert both == pytest.approx(p * p, abs=5 * math.sqrt(p * p * (1 - p * p) / n))
    gap_two = (dropped[:-2] * dropped[2:]).mean().item()
    assert gap_two == pytest.approx(p * p, abs=5 * math.sqrt(p * p * (1 - p * p) / n))


def test_several_rounds_of_gaps_cover_the_tensor():
    # with a tiny first round the sampler must keep drawing until it passes the end
    generator = torch.Generator().manual_seed(2)
    n, p = 50_000, 0.5
    positions = drop_positions(n, p, generator, draws=10)
    assert torch.all(positions[1:] > positions[:-1])
    assert int(positions.max()) < n
    assert positions.numel() / n == pytest.approx(p, abs=5 * math.sqrt(p * (1 - p) / n))
    assert int(positions.max()) > n - 50  # the tail is covered too


def test_edge_cases_and_reproducibility():
    assert drop_positions(1000, 0.0).numel() == 0
    assert drop_positions(0, 0.5).numel() == 0
    for bad in (1.0, -0.1):
        with pytest.raises(ValueError, match=r"\[0, 1\)"):
            drop_positions(10, bad)
    a = drop_positions(10_000, 0.1, torch.Generator().manual_seed(7))
    b = drop_positions(10_000, 0.1, torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    assert not torch.equal(drop_positions(10_000, 0.1), drop_positions(10_000, 0.1))


def test_plan_zeroes_exactly_its_positions():
    plan = DropPlan.draw((64, 33), 0.25, "cpu", torch.Generator().manual_seed(3))
    x = torch.randn(64, 33)
    dropped = plan.apply(x)
    zero = torch.zeros(64 * 33, dtype=torch.bool)
    zero[plan.positions] = True
    assert torch.equal(dropped.view(-1)[zero], torch.zeros(int(zero.sum())))
    assert torch.equal(dropped.view(-1)[~zero], x.view(-1)[~zero])
    assert not torch.equal(x, dropped)  # apply copies; x is untouched
    t = x.clone()
    assert plan.apply_(t) is t and torch.equal(t, dropped)
    assert plan.nbytes == plan.positions.numel() * 8


def test_plan_applies_to_non_contiguous_input_in_row_major_order():
    plan = DropPlan(positions=torch.tensor([0, 5]))
    x = torch.arange(1.0, 7.0).view(3, 2).t()  # [2, 3], not contiguous
    assert torch.equal(plan.apply(x), torch.tensor([[0.0, 3.0, 5.0], [2.0, 4.0, 0.0]]))


def test_mask_plans_off_the_cpu_and_their_use():
    on_meta = DropPlan.draw((3, 4), 0.1, "meta")
    assert on_meta.positions is None and on_meta.mask.shape == (3, 4) and on_meta.mask.dtype == torch.uint8
    plan = DropPlan(mask=torch.tensor([[1, 0], [0, 1]], dtype=torch.uint8))
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    assert torch.equal(plan.apply(x), torch.tensor([[1.0, 0.0], [0.0, 4.0]]))
    assert torch.equal(plan.apply_(x.clone()), torch.tensor([[1.0, 0.0], [0.0, 4.0]]))
    assert plan.nbytes == 4
    with pytest.raises(ValueError, match="exactly one"):
        DropPlan()
