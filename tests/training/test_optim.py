"""Optimizers from the config, learning-rate schedules against their closed forms, restore."""

from __future__ import annotations

import io
import math

import pytest
import torch
from torch import nn

from senior_intern.config import OptimizerType, SchedulerType, TrainingConfig
from senior_intern.training.optim import build_optimizer, build_scheduler, lr_at

PEAK, FLOOR = 1e-3, 1e-5


def _params(trainable_bias: bool = True) -> list[nn.Parameter]:
    torch.manual_seed(0)
    matrix = nn.Parameter(torch.randn(4, 3))
    bias = nn.Parameter(torch.randn(3))
    bias.requires_grad_(trainable_bias)
    return [matrix, bias]


def _cfg(**kw) -> TrainingConfig:
    base = dict(learning_rate=PEAK, min_learning_rate=FLOOR, warmup_steps=10, weight_decay=0.1)
    return TrainingConfig(**{**base, **kw})


# --- optimizers -----------------------------------------------------------------------------

def test_adamw_and_adam_take_the_config_options() -> None:
    for kind, cls in ((OptimizerType.ADAMW, torch.optim.AdamW), (OptimizerType.ADAM, torch.optim.Adam)):
        cfg = _cfg(optimizer=kind, adam_beta1=0.8, adam_beta2=0.95, adam_epsilon=1e-6)
        opt = build_optimizer(_params(), cfg)
        assert type(opt) is cls
        decay, no_decay = opt.param_groups
        for group in (decay, no_decay):
            assert group["lr"] == PEAK and group["betas"] == (0.8, 0.95) and group["eps"] == 1e-6
            assert group["fused"] is True  # fastest on this CPU (see optim.py)
        assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
        assert [p.dim() for p in decay["params"]] == [2] and [p.dim() for p in no_decay["params"]] == [1]


def test_sgd_and_rmsprop_take_the_config_options() -> None:
    sgd = build_optimizer(_params(), _cfg(optimizer=OptimizerType.SGD, momentum=0.8, nesterov=True))
    assert type(sgd) is torch.optim.SGD
    group = sgd.param_groups[0]
    assert (group["lr"], group["momentum"], group["nesterov"], group["weight_decay"]) == (PEAK, 0.8, True, 0.1)
    rms = build_optimizer(
        _params(), _cfg(optimizer=OptimizerType.RMSPROP, momentum=0.5, rmsprop_alpha=0.9, adam_epsilon=1e-7)
    )
    assert type(rms) is torch.optim.RMSprop
    group = rms.param_groups[0]
    assert (group["alpha"], group["eps"], group["momentum"], group["weight_decay"]) == (0.9, 1e-7, 0.5, 0.1)
    assert rms.param_groups[1]["weight_decay"] == 0.0


def test_only_trainable_parameters_are_optimised() -> None:
    params = _params(trainable_bias=False)
    opt = build_optimizer(params, _cfg())
    assert len(opt.param_groups) == 1 and opt.param_groups[0]["params"] == [params[0]]
    frozen = [nn.Parameter(torch.zeros(2), requires_grad=False)]
    with pytest.raises(ValueError, match="target_modules"):
        build_optimizer(frozen, _cfg())


def test_adamw_decays_matrices_but_not_biases() -> None:
    params = _params()
    before = [p.detach().clone() for p in params]
    opt = build_optimizer(params, _cfg(optimizer=OptimizerType.ADAMW))
    for p in params:
        p.grad = torch.zeros_like(p)  # only the decoupled decay moves anything
    opt.step()
    torch.testing.assert_close(params[0].detach(), before[0] * (1 - PEAK * 0.1))
    assert torch.equal(params[1].detach(), before[1])


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_momentum_update_by_hand(nesterov: bool) -> None:
    lr, mu, g = 0.1, 0.5, 2.0
    p = nn.Parameter(torch.tensor([1.0]))
    opt = build_optimizer([p], _cfg(optimizer=OptimizerType.SGD, learning_rate=lr, momentum=mu,
                                    nesterov=nesterov, weight_decay=0.0))
    expected, buf = 1.0, 0.0
    for _ in range(3):
        p.grad = torch.tensor([g])
        opt.step()
        buf = mu * buf + g if buf else g
        expected -= lr * ((g + mu * buf) if nesterov else buf)
        assert p.item() == pytest.approx(expected, rel=1e-6)


# --- schedules ------------------------------------------------------------------------------

def _cosine(p: float) -> float:
    return FLOOR + (PEAK - FLOOR) * 0.5 * (1 + math.cos(math.pi * p))


# warmup 10, total 110: decay phase of 100 steps, so step 10 + 100 p is at progress p.
EXPECTED = {
    SchedulerType.COSINE: {35: _cosine(0.25), 60: _cosine(0.5), 109: _cosine(0.99), 110: FLOOR},
    SchedulerType.LINEAR: {35: FLOOR + (PEAK - FLOOR) * 0.75, 60: (PEAK + FLOOR) / 2, 110: FLOOR},
    SchedulerType.POLYNOMIAL: {35: FLOOR + (PEAK - FLOOR) * 0.75**2, 60: FLOOR + (PEAK - FLOOR) * 0.25, 110: FLOOR},
    SchedulerType.CONSTANT: {35: PEAK, 60: PEAK, 110: PEAK},
}


@pytest.mark.parametrize("kind", list(EXPECTED))
def test_schedule_matches_closed_form(kind: SchedulerType) -> None:
    cfg = _cfg(lr_scheduler=kind, polynomial_power=2.0)
    assert lr_at(0, cfg, 110) == 0.0  # warm-up starts at 0
    assert lr_at(4, cfg, 110) == pytest.approx(PEAK * 0.4)
    assert lr_at(10, cfg, 110) == pytest.approx(PEAK)  # warm-up end: the peak
    for step, want in EXPECTED[kind].items():
        assert lr_at(step, cfg, 110) == pytest.approx(want, rel=1e-9), step
    assert lr_at(500, cfg, 110) == EXPECTED[kind][110]  # past the end it stays at the floor


def test_cosine_with_restarts_restarts_at_the_right_steps() -> None:
    cfg = _cfg(lr_scheduler=SchedulerType.COSINE_WITH_RESTARTS, num_cycles=3, cycle_multiplier=2)
    # decay phase of 70 steps in cycles of 10, 20 and 40 steps starting at 10, 20, 40.
    assert [s for s in range(11, 80) if lr_at(s, cfg, 80) == pytest.approx(PEAK)] == [20, 40]
    for start in (10, 20, 40):
        assert lr_at(start, cfg, 80) == pytest.approx(PEAK)
    for restart in (20, 40):
        assert lr_at(restart - 1, cfg, 80) < 0.05 * PEAK  # the end of the previous cycle
    assert lr_at(15, cfg, 80) == pytest.approx(_cosine(5 / 10))
    assert lr_at(30, cfg, 80) == pytest.approx(_cosine(10 / 20))
    assert lr_at(70, cfg, 80) == pytest.approx(_cosine(30 / 40))
    assert lr_at(80, cfg, 80) == FLOOR
    equal = _cfg(lr_scheduler=SchedulerType.COSINE_WITH_RESTARTS, num_cycles=2, cycle_multiplier=1)
    assert [s for s in range(11, 80) if lr_at(s, equal, 80) == pytest.approx(PEAK)] == [45]
    assert lr_at(44, equal, 80) == pytest.approx(_cosine(34 / 35))


def test_warmup_longer_than_the_run_is_capped_to_the_run() -> None:
    cfg = _cfg(warmup_steps=50)
    assert [lr_at(s, cfg, 20) for s in (0, 10, 19)] == pytest.approx([0.0, PEAK / 2, PEAK * 19 / 20])
    assert lr_at(20, cfg, 20) == FLOOR  # the (empty) decay phase is over at the end


@pytest.mark.parametrize("kind", list(SchedulerType))
def test_scheduler_follows_lr_at(kind: SchedulerType) -> None:
    cfg = _cfg(lr_scheduler=kind, num_cycles=2)
    params = _params()
    opt = build_optimizer(params, cfg)
    sched = build_scheduler(opt, cfg, 40)
    for step in range(45):
        for group in opt.param_groups:
            assert group["lr"] == pytest.approx(lr_at(step, cfg, 40), rel=1e-12, abs=1e-15)
        opt.step()
        sched.step()


def _train(params, opt, sched, steps: int) -> list[float]:
    lrs = []
    for _ in range(steps):
        loss = sum((p**2).sum() + 0.3 * p.sum() for p in params)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        lrs.append(sched.get_last_lr()[0])
    return lrs


@pytest.mark.parametrize("kind", list(OptimizerType))
def test_optimizer_and_scheduler_resume_from_state_dict(kind: OptimizerType) -> None:
    cfg = _cfg(optimizer=kind, lr_scheduler=SchedulerType.COSINE_WITH_RESTARTS, warmup_steps=3, num_cycles=2)
    params = _params()
    opt = build_optimizer(params, cfg)
    reference = _train(params, opt, build_scheduler(opt, cfg, 20), 12)
    expected_params = [p.detach().clone() for p in params]

    params = _params()
    opt = build_optimizer(params, cfg)
    sched = build_scheduler(opt, cfg, 20)
    first = _train(params, opt, sched, 5)
    buffer = io.BytesIO()
    torch.save({"params": [p.detach() for p in params], "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict()}, buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)

    params = [nn.Parameter(t.clone()) for t in state["params"]]
    opt = build_optimizer(params, cfg)
    sched = build_scheduler(opt, cfg, 20)
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    second = _train(params, opt, sched, 7)

    assert first + second == reference
    for got, want in zip(params, expected_params, strict=True):
        assert torch.equal(got.detach(), want)


def test_schedule_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="total_steps"):
        lr_at(0, _cfg(), 0)
    with pytest.raises(ValueError, match="step"):
        lr_at(-1, _cfg(), 10)
    with pytest.raises(ValueError, match="learning_rate"):
        build_scheduler(build_optimizer(_params(), _cfg()), _cfg(learning_rate=0.0), 10)
    with pytest.raises(ValueError, match="total_steps"):
        build_scheduler(build_optimizer(_params(), _cfg()), _cfg(), 0)
    with pytest.raises(ValueError, match="num_cycles"):
        lr_at(20, _cfg(lr_scheduler=SchedulerType.COSINE_WITH_RESTARTS, num_cycles=0), 30)
    with pytest.raises(ValueError, match="nesterov"):
        build_optimizer(_params(), _cfg(optimizer=OptimizerType.SGD, nesterov=True, momentum=0.0))
