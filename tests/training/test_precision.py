"""float16 loss scaling and the float32 matmul precision, on the CPU (issue #16, items 1 and 6)."""

from __future__ import annotations

import functools

import pytest
import torch

from senior_intern.training import checkpoint as ckpt
from senior_intern.training import precision, session
from senior_intern.training.engine import Trainer
from senior_intern.training.control import TrainingControl
from senior_intern.training.events import LogMessage, Progress, TrainingStatus
from senior_intern.training.precision import LossScaler, configure_matmul_precision


def _param_with_grad(value: float) -> tuple[torch.nn.Parameter, torch.optim.Optimizer]:
    p = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.SGD([p], lr=1.0)
    p.grad = torch.full((3,), value)
    return p, opt


def test_float32_and_bfloat16_are_pass_throughs() -> None:
    for dtype in (torch.float32, torch.bfloat16):
        scaler = LossScaler(dtype, "cpu")
        loss = torch.tensor(2.0)
        assert scaler.scale(loss) is loss and scaler.scale_value == 1.0
        p, opt = _param_with_grad(0.5)
        assert scaler.unscale(opt) is False
        scaler.step(opt)
        scaler.update()
        assert torch.equal(p.detach(), torch.full((3,), 0.5)) and scaler.state_dict() == {}


def test_float16_scales_unscales_before_clipping_and_skips_overflow() -> None:
    scaler = LossScaler(torch.float16, "cpu", init_scale=1024.0)
    assert float(scaler.scale(torch.tensor(1.5))) == 1536.0
    p, opt = _param_with_grad(1024.0 * 0.25)  # a scaled gradient of 0.25
    assert scaler.unscale(opt) is False
    assert torch.equal(p.grad, torch.full((3,), 0.25))  # true gradient, ready for clipping
    scaler.step(opt)
    scaler.update()
    assert torch.equal(p.detach(), torch.full((3,), 0.75)) and scaler.overflow_steps == 0
    p.grad = torch.tensor([1.0, float("inf"), 0.0])
    assert scaler.unscale(opt) is True and scaler.overflowed()
    scaler.update()  # the caller skipped the step
    assert scaler.overflow_steps == 1 and scaler.scale_value == 512.0
    assert torch.equal(p.detach(), torch.full((3,), 0.75))


def test_float16_scaler_state_round_trips() -> None:
    a = LossScaler(torch.float16, "cpu", init_scale=256.0)
    a.overflow_steps = 3
    state = a.state_dict()
    assert state["scale"] == 256.0 and state["overflow_steps"] == 3
    b = LossScaler(torch.float16, "cpu")
    b.load_state_dict(state)
    assert b.scale_value == 256.0 and b.overflow_steps == 3
    b.load_state_dict({})  # a checkpoint from a float32 run keeps the defaults
    assert b.scale_value == 256.0


@pytest.mark.parametrize(
    ("kind", "capability", "dtype", "expected"),
    [("cuda", (8, 0), torch.float32, "high"), ("cuda", (9, 0), torch.float32, "high"),
     ("cuda", (7, 5), torch.float32, "highest"), ("cuda", (8, 6), torch.bfloat16, "highest"),
     ("cpu", None, torch.float32, "highest")],
)
def test_tf32_only_for_float32_on_ampere_or_newer(monkeypatch, kind, capability, dtype, expected) -> None:
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=None: capability)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.version, "hip", None)
    before = torch.get_float32_matmul_precision()
    try:
        device = torch.device(kind, 0) if kind == "cuda" else torch.device(kind)
        assert configure_matmul_precision(device, dtype) == expected
        assert torch.get_float32_matmul_precision() == expected
    finally:
        torch.set_float32_matmul_precision(before)


def test_float16_run_on_cpu_skips_overflows_keeps_scale_in_checkpoints_and_resumes(tiny_job, monkeypatch, tmp_path) -> None:
    # float16 is refused on the CPU for real runs; here it runs the same code path a T4 takes.
    monkeypatch.setattr(session, "resolve_dtype", lambda setting, device: torch.float16)
    monkeypatch.setattr(session, "LossScaler", functools.partial(LossScaler, init_scale=2.0 ** 40))
    tiny_job.training.max_steps, tiny_job.training.save_every = 8, 100
    control = TrainingControl()
    events: list = []

    def on_event(e):
        events.append(e)
        if isinstance(e, Progress) and e.global_step == 5:
            control.cancel()

    result = Trainer().run(tiny_job, control, on_event)
    assert result.status is TrainingStatus.CANCELLED, result.error_message
    overflow_lines = [e.text for e in events if isinstance(e, LogMessage) and "overflowed" in e.text]
    assert overflow_lines and result.skipped_steps == len(overflow_lines)
    assert any("float16 loss scaling" in e.text for e in events if isinstance(e, LogMessage))
    saved = ckpt.load(result.resume_checkpoint).trainer_state["scaler"]
    assert saved["scale"] == 2.0 ** 40 / 2 ** len(overflow_lines) and saved["overflow_steps"] == len(overflow_lines)
    assert all(torch.isfinite(torch.tensor([m.loss for m in result.metrics_history])))

    restored: list[float] = []
    original = session.Session._restore

    def spy(self, c):
        original(self, c)
        restored.append(self.scaler.scale_value)

    monkeypatch.setattr(session.Session, "_restore", spy)
    resumed = Trainer().resume(result.resume_checkpoint)
    assert resumed.status is TrainingStatus.COMPLETED, resumed.error_message
    assert restored == [saved["scale"]] and resumed.total_steps == 8


def test_loss_scaler_defaults_match_gradscaler() -> None:
    assert precision.INIT_SCALE == torch.amp.GradScaler("cpu").get_scale()
