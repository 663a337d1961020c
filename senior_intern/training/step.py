"""One optimizer step of a ``Session``, and the ``Progress`` event it reports.

``optimizer_step(session, group)`` runs the micro-batches of one accumulation group through the
forward pass and backward (gradients all-reduced on the last one when data parallel), with
``check_control`` between micro-batches, normalises the loss by the global number of trained
tokens, unscales (float16), clips, steps the optimizer unless the loss or gradients are not
finite (a run of them fails the run), steps the schedule, records the metrics, appends a line
to ``metrics.jsonl`` and emits a ``Progress`` event. One device sync per step.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

import torch

from senior_intern.training import saving
from senior_intern.training.events import LogLevel, Progress, TrainingMetrics
from senior_intern.training.forward import training_inputs
from senior_intern.training.gradients import clip_grad_norm
from senior_intern.training.lifecycle import RunStopped

if TYPE_CHECKING:  # typing only: session.py imports this module
    from senior_intern.training.session import Session


def optimizer_step(s: Session, group: list) -> None:
    """One optimizer step over the micro-batches of ``group`` (one accumulation group)."""
    cfg, pos = s.cfg, s.pos
    # Counts over every rank: the loss is normalised by the global number of trained tokens.
    total_trained, n_samples, n_tokens = (int(v) for v in s.dp.sum(
        sum(b.n_trained_tokens for b in group), sum(b.n_samples for b in group), sum(b.n_tokens for b in group)))
    normaliser = max(total_trained, 1)
    loss_sum = torch.zeros((), device=s.device, dtype=torch.float32)
    correct = torch.zeros((), device=s.device, dtype=torch.long)
    for batch, sync in s.dp.micro_steps(group):  # gradients all-reduced on the last only
        s.check_control()
        # Labels stay on the CPU: the loss selects trained positions without a device sync.
        with sync:
            parts = s.dp.forward(training_inputs(batch, s.dtype, s.device, s.forward.segments), batch.labels)
            s.dp.backward(s.scaler.scale(parts.loss_sum * s.dp.loss_scale / normaliser))
        loss_sum += parts.loss_sum.detach().float()
        correct += parts.n_correct
    # One device sync per optimizer step: the loss and the gradient norm.
    loss_total, correct_total = s.dp.sum(loss_sum, correct)
    loss = loss_total / normaliser
    s.scaler.unscale(s.optimizer)  # float16: true gradients before clipping
    grad_norm = clip_grad_norm(s.params, cfg.max_grad_norm)
    if math.isfinite(loss) and math.isfinite(grad_norm):
        s.scaler.step(s.optimizer)
        pos.nonfinite_streak = 0
    elif math.isfinite(loss) and s.scaler.overflowed():  # float16 overflow: a smaller scale, not divergence
        pos.skipped_steps += 1
        s.log(f"Step {pos.global_step + 1}: float16 gradients overflowed at loss scale "
              f"{s.scaler.scale_value:g}; step skipped, scale halved", LogLevel.INFO)
    else:
        pos.skipped_steps += 1
        pos.nonfinite_streak += 1
        s.log(f"Step {pos.global_step + 1}: non-finite loss or gradient; step skipped", LogLevel.WARNING)
        if pos.nonfinite_streak >= cfg.max_nonfinite_steps:
            raise RunStopped(
                "failed",
                f"The loss or gradients were NaN/Inf for {pos.nonfinite_streak} steps in a row; training "
                f"diverged. Lower the learning rate (now {cfg.learning_rate:g}) or max_grad_norm and resume "
                "from the last good checkpoint.",
            )
    s.scaler.update()
    s.optimizer.zero_grad(set_to_none=True)
    lr = s.optimizer.param_groups[0]["lr"]
    s.scheduler.step()
    pos.global_step += 1
    pos.step_in_epoch += 1
    pos.samples += n_samples
    pos.tokens += n_tokens
    pos.trained_tokens += total_trained
    metrics = TrainingMetrics(
        step=pos.global_step,
        epoch=pos.epoch + 1,
        loss=loss,
        learning_rate=lr,
        grad_norm=grad_norm,
        token_accuracy=correct_total / normaliser,
    )
    s.tracker.record(metrics)
    saving.write_metrics(s, metrics, eval_line=False)
    s.emit(progress(s, metrics))


def progress(s: Session, metrics: TrainingMetrics) -> Progress:
    """The ``Progress`` event after the step of ``metrics`` (hardware sampled at most once a second)."""
    pos = s.pos
    now = time.perf_counter()
    if s.monitor is not None and now - s.hardware_time >= 1.0:
        s.hardware, s.hardware_time = s.monitor.sample(), now
    active = s.active_seconds(now)
    elapsed = pos.elapsed_before + active
    done_here = max(1, pos.global_step - s.start_step)
    eta = active / done_here * (s.total_steps - pos.global_step)
    return Progress(
        epoch=pos.epoch + 1,
        total_epochs=s.cfg.epochs,
        step_in_epoch=pos.step_in_epoch,
        steps_per_epoch=s.steps_per_epoch,
        global_step=pos.global_step,
        total_steps=s.total_steps,
        samples_processed=pos.samples,
        total_samples=s.total_samples * s.cfg.epochs,
        tokens_processed=pos.tokens,
        trained_tokens_processed=pos.trained_tokens,
        elapsed=elapsed,
        eta=eta,
        metrics=metrics,
        hardware=s.hardware,
        operation=f"Epoch {pos.epoch + 1}/{s.cfg.epochs}, step {pos.step_in_epoch}/{s.steps_per_epoch}",
    )
