"""One training run in progress: its parts, its position, and the steps of the loop.

A ``Session`` holds everything a run needs (model, loaders, optimizer, scheduler, trackers) and
does all of the run's work through four public steps, which ``Trainer`` (engine.py) calls in
order: ``prepare()`` builds the parts (or restores a checkpoint), ``train()`` runs the loop one
optimizer step at a time (``_optimizer_step``, ``_maybe_evaluate``, ``_maybe_save``),
``finish()`` ends a run that trained to its end (final checkpoint, best reload, final
evaluation, adapter into the library) and ``stop()`` ends a cancelled or failed one (checkpoint
on cancel); ``close()`` releases the run's lock whatever happened, and ``summary()`` is what the
result reports. One optimizer step is in ``step.py``, checkpoints, ``metrics.jsonl`` and the end
of the run in ``saving.py``. Every attribute exists from ``__init__`` on (None, 0 or empty until
``prepare`` sets it).
"""

from __future__ import annotations

import itertools
import math
import os
import time
from pathlib import Path
from typing import Any, Callable

import torch

from senior_intern import paths
from senior_intern.config import TrainingJob
from senior_intern.layout import CHECKPOINTS_DIR, JOB_FILE, METRICS_FILE
from senior_intern.data import BatchLoader, load_training_data
from senior_intern.hardware.detect import resolve_device, resolve_dtype
from senior_intern.hardware.metrics import HardwareMetrics
from senior_intern.lora import LoraModel
from senior_intern.models import ModelInfo, load_base_model
from senior_intern.training import checkpoint as ckpt
from senior_intern.training import distributed, saving
from senior_intern.training.early_stopping import EarlyStopping
from senior_intern.training.estimate import check_base_fits
from senior_intern.training.events import (
    Evaluated,
    LogLevel,
    LogMessage,
    ModelOpening,
    TrainingState,
)
from senior_intern.training.forward import CausalLMForward, training_inputs
from senior_intern.training.lifecycle import Finished, Position, RunState, RunStopped, RunSummary
from senior_intern.training.metrics import TrainingMetricsTracker
from senior_intern.training.optim import build_optimizer, build_scheduler
from senior_intern.training.plan import pad_token_id, plan_run
from senior_intern.training.precision import LossScaler, configure_matmul_precision, describe_matmul_precision
from senior_intern.training.prepare import prepare_for_training
from senior_intern.training.runlock import RunLock
from senior_intern.training.step import optimizer_step

__all__ = ["Position", "RunStopped", "Session", "held_summary", "unique_run_dir"]


def unique_run_dir(job: TrainingJob) -> Path:
    """``<output>/<name>``, or ``<name>-2``, ``-3``... when that folder already holds a run."""
    base = job.run_dir
    candidate, n = base, 1
    while candidate.exists() and any(candidate.iterdir()):
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate


OPENING_INTERVAL = 0.5
"""Seconds between two opening-progress messages."""


def held_summary(model: torch.nn.Module, held: str) -> str:
    """How the frozen base is held, for the log: ``"weights as GGUF blocks (Q4_1, Q8_0), 92.0 MB; other tensors 0.1 MB"``."""
    from senior_intern.models.quantized import FrozenEmbedding, FrozenLinear, compact_bytes

    packed, other = compact_bytes(model)
    kinds = sorted({m.kind for m in model.modules() if isinstance(m, (FrozenLinear, FrozenEmbedding))})
    if not kinds:
        return f"weights dense ({held}), {other / 1e6:.1f} MB"
    how = f"GGUF blocks ({', '.join(kinds)})" if held == "gguf" else ", ".join(kinds)
    return f"weights as {how}, {packed / 1e6:.1f} MB; other tensors {other / 1e6:.1f} MB"


class Session:
    """Prepares, runs and ends one training job; reports through ``emit`` and obeys ``control``.

    ``states``: the run's ``RunState``, shared with the ``Trainer`` (a new one, emitting through
    ``emit``, when not given). ``run_lock``: the run folder's lock when the caller took it (a
    resume); a new run takes its own in ``prepare``. ``close()`` releases it.
    """

    def __init__(self, job: TrainingJob, emit: Callable[[Any], None], control=None, monitor=None, *,
                 states: RunState | None = None, run_lock: RunLock | None = None) -> None:
        self.job = job
        self.cfg = job.training
        self.emit = emit
        self.states = states if states is not None else RunState(emit)
        self.control = control
        self.monitor = monitor
        self.pos = Position()
        self.tracker = TrainingMetricsTracker()
        self.early = EarlyStopping(self.cfg.early_stopping_patience, self.cfg.early_stopping_min_delta)
        self.run_dir: Path | None = None
        self.run_lock = run_lock  # held for the whole run; close() releases it
        self.checkpoints: ckpt.CheckpointManager | None = None
        self.dp = distributed.DataParallel()  # data parallel hooks; pass-throughs in one process
        # Built by prepare():
        self.device: torch.device | None = None
        self.dtype: torch.dtype | None = None
        self.scaler: LossScaler | None = None
        self.model_info: ModelInfo | None = None
        self.tokenizer: Any = None
        self.lora: LoraModel | None = None
        self.forward: CausalLMForward | None = None
        self.train_loader: BatchLoader | None = None
        self.val_loader: BatchLoader | None = None  # None: no validation data
        self.total_samples = 0
        self.steps_per_epoch = 0
        self.total_steps = 0
        self.params: list[torch.nn.Parameter] = []
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
        # The loop's bookkeeping:
        self.saved_at = -1  # step of the last step checkpoint (not "best")
        self.group_start: tuple[dict[str, Any], dict[str, Any]] | None = None
        self.last_validation: tuple[float, float] | None = None
        self.start_step = 0  # the step this process started training at
        self.hardware = HardwareMetrics()  # the last reading of the monitor
        self.hardware_time = 0.0  # when it was taken (time.perf_counter)
        self._active_start = 0.0  # when training started here, moved on by paused time
        self._opening_shown = 0.0

    @property
    def state(self) -> TrainingState:
        """The run's current state (from the shared ``RunState``)."""
        return self.states.current

    def set_state(self, new: TrainingState, message: str = "") -> None:
        """Move to ``new``; the ``RunState`` emits the StateChanged event."""
        self.states.set(new, message)

    def active_seconds(self, now: float | None = None) -> float:
        """Seconds this process has trained until ``now`` (``time.perf_counter()``; default: now), paused time excluded."""
        return (time.perf_counter() if now is None else now) - self._active_start

    def _opening(self, done: int, total: int) -> None:
        """Opening progress of the base model as ``ModelOpening`` events (at most twice a second)."""
        now = time.monotonic()
        if 0 < done < total and now - self._opening_shown < OPENING_INTERVAL:
            return
        self._opening_shown = now
        self.emit(ModelOpening(done, total))

    def log(self, text: str, level: LogLevel = LogLevel.INFO) -> None:
        """Send a line to the log."""
        self.emit(LogMessage(level, text))

    # --- preparation --------------------------------------------------------------------------
    def prepare(self, resume_from: ckpt.Checkpoint | None = None) -> None:
        """Load the model, wrap it with LoRA, load the data, build optimizer and scheduler."""
        job, cfg = self.job, self.cfg
        self.device = distributed.rank_device(self.dp.ctx, resolve_device(cfg.device))
        self.dtype = resolve_dtype(cfg.dtype, self.device)
        self.log(f"Device {self.device}, dtype {str(self.dtype).removeprefix('torch.')}")
        if hasattr(self.monitor, "use_device"):  # allocator figures of the run's own device
            self.monitor.use_device(self.device)
        self.scaler = LossScaler(self.dtype, self.device)  # float16: loss scaling; else a pass-through
        self.log(f"{describe_matmul_precision(configure_matmul_precision(self.device, self.dtype))}; {self.scaler.describe()}")
        torch.manual_seed(cfg.seed)
        check_base_fits(job, self.device, self.dtype)  # seconds, not a minute's load into swap or an OOM kill
        self.log(f"Loading base model {job.base_model_path}")
        loaded = load_base_model(job.base_model_path, device=self.device, dtype=self.dtype,
                                 base_quantization=cfg.base_quantization, progress=self._opening)
        self.model_info, self.tokenizer = loaded.info, loaded.tokenizer
        self.log(f"Base model opened in {loaded.info.load_seconds:.1f} s; {held_summary(loaded.model, loaded.info.base_held)}")
        context = self.model_info.context_length
        if context and cfg.max_seq_length > context:
            self.log(f"max_seq_length ({cfg.max_seq_length}) is longer than the model's context length ({context}); "
                     f"positions past {context} were never trained in the base: lower max_seq_length to {context} or less",
                     LogLevel.WARNING)
        # LoRA factors stay float32 under a bf16/fp16 base: AdamW's small updates would round away.
        adapter_dtype = torch.float32 if self.dtype in (torch.bfloat16, torch.float16) else None
        self.lora = LoraModel(loaded.model, job.lora, dtype=adapter_dtype)
        for warning in self.lora.warnings:
            self.log(warning, LogLevel.WARNING)
        self.log(f"LoRA on {len(self.lora.lora_layers())} layers: {self.lora.parameter_summary()}")
        try:  # the model's only changes besides LoRA: checkpointing, fused MLPs, segment attention
            prep = prepare_for_training(loaded.model, cfg)
        except ValueError as exc:
            raise ValueError(f"{job.base_model_path}: {exc}") from exc
        self.log(prep.describe(self.device, self.dtype))
        self.forward = CausalLMForward(loaded.model, cfg.loss_chunk_size)
        if self.dp.enabled:  # distributed: per-rank dropout streams, the world in the log
            torch.manual_seed(cfg.seed + self.dp.rank)
            self.log(distributed.describe(self.dp.ctx, self.device, self.dp.gather(os.getpid())))
        self.log(f"Loading dataset {job.dataset_path}")
        data = load_training_data(job, self.tokenizer)
        for message in data.messages:
            self.log(message.text, LogLevel.WARNING if message.lost else LogLevel.INFO)
        common = dict(pad_id=pad_token_id(self.tokenizer), max_seq_length=cfg.max_seq_length, packing=cfg.packing, seed=cfg.seed,
                      rank=self.dp.rank, world_size=self.dp.world_size)
        self.train_loader = BatchLoader(data.train, cfg.batch_size, shuffle=True, **common)
        self.val_loader = BatchLoader(data.validation, cfg.batch_size, shuffle=False, **common) if data.validation else None
        self.total_samples = len(data.train)
        plan = plan_run(job, self.tokenizer, data.train, len(self.train_loader))
        self.steps_per_epoch, self.total_steps = plan.steps_per_epoch, plan.total_steps
        for warning in job.validate(total_steps=self.total_steps).warnings:
            self.log(warning, LogLevel.WARNING)
        self.params = self.lora.lora_parameters()
        self.dp.wrap(loaded.model, self.forward, self.params)
        self.optimizer = build_optimizer(self.params, cfg)
        self.scheduler = build_scheduler(self.optimizer, cfg, self.total_steps)
        self.log(
            f"{self.total_samples} training samples, {len(data.validation)} validation samples; "
            f"{self.steps_per_epoch} steps per epoch, {self.total_steps} steps in all; global batch "
            f"{cfg.batch_size * self.dp.world_size * cfg.gradient_accumulation_steps} = {cfg.batch_size} per process "
            f"x {self.dp.world_size} processes x {cfg.gradient_accumulation_steps} accumulation steps"
        )
        if resume_from is not None:
            self._restore(resume_from)
        else:
            self.run_dir = self.dp.broadcast(unique_run_dir(job) if self.dp.is_main else None)
            if self.dp.is_main:  # rank 0 alone writes, and holds the run's lock
                self.run_dir.mkdir(parents=True, exist_ok=True)
                self.run_lock = RunLock.acquire(self.run_dir)
                job.save(self.run_dir / JOB_FILE)
                (self.run_dir / METRICS_FILE).write_text("", encoding="utf-8")
            self.dp.barrier()
            self.train_loader.set_epoch(0)
        self.checkpoints = ckpt.CheckpointManager(self.run_dir / CHECKPOINTS_DIR, cfg.max_checkpoints)

    def _restore(self, c: ckpt.Checkpoint) -> None:
        saving.restore(self, c)

    # --- the loop -----------------------------------------------------------------------------
    def train(self) -> bool:
        """Enter Training and run to the end; True when stopped early by early stopping."""
        cfg, pos = self.cfg, self.pos
        self.set_state(TrainingState.TRAINING, "Training")
        self._active_start = time.perf_counter()
        self.start_step = pos.global_step
        self.lora.train()
        self._maybe_evaluate(force=False)  # a resumed run that was stopped before its evaluation
        while pos.epoch < cfg.epochs and pos.global_step < self.total_steps:
            batches = iter(self.train_loader)
            while pos.global_step < self.total_steps and pos.step_in_epoch < self.steps_per_epoch:
                # What a cancel in the middle of this accumulation group restores to.
                self.group_start = (self.train_loader.state_dict(), ckpt.capture_rng_state())
                group = list(itertools.islice(batches, cfg.gradient_accumulation_steps))
                if not group:
                    break
                self._optimizer_step(group)
                self.group_start = None
                self._maybe_evaluate(force=False)
                if self.early.should_stop:
                    return True
                self._maybe_save(force=False)
            if pos.step_in_epoch < self.steps_per_epoch:
                break  # max_steps reached in the middle of an epoch
            pos.epoch += 1
            pos.step_in_epoch = 0
            self.train_loader.set_epoch(pos.epoch)
            self._maybe_evaluate(force=True)
            if self.early.should_stop:
                return True
            self._maybe_save(force=True)
        return False

    def exclude_paused(self, seconds: float) -> None:
        """Leave ``seconds`` of pause out of the training time (``active_seconds``)."""
        self._active_start += seconds

    def check_control(self) -> None:
        """Between micro-batches: wait while paused (no CPU), raise ``RunStopped`` on cancel."""
        if self.dp.enabled:  # every rank takes the same decision at the same micro-batch
            return self.dp.check_control(self)
        if self.control is None:
            return
        if self.control.paused and not self.control.cancelled:
            paused_at, was = time.perf_counter(), self.state
            self.set_state(TrainingState.PAUSED, "Paused")
            while self.control.paused and not self.control.cancelled:
                self.control.wait_while_paused(timeout=0.5)
            self.exclude_paused(time.perf_counter() - paused_at)
            if not self.control.cancelled:
                self.set_state(was, "Resumed")
        if self.control.cancelled:
            raise RunStopped("cancelled", "Training was cancelled by user")

    def _optimizer_step(self, group: list) -> None:
        optimizer_step(self, group)


    def evaluate(self) -> tuple[float, float]:
        """Token-weighted validation loss and accuracy of the current weights."""
        self.lora.eval()
        loss_sum, correct, n = 0.0, 0, 0
        try:
            with torch.no_grad():
                for batch in self.val_loader:
                    self.check_control()
                    parts = self.forward(training_inputs(batch, self.dtype, self.device, self.forward.segments), batch.labels)
                    loss_sum += parts.loss_sum.item()
                    correct += int(parts.n_correct.item())
                    n += parts.n_valid
        finally:
            self.lora.train()
        loss_sum, correct, n = self.dp.sum(loss_sum, correct, n)  # every rank evaluated its shard
        return (loss_sum / n if n else math.nan), (correct / n if n else 0.0)

    def _maybe_evaluate(self, force: bool) -> None:
        cfg, pos = self.cfg, self.pos
        if self.val_loader is None or pos.evaluated_at == pos.global_step or pos.global_step == 0:
            return
        if not force and not (cfg.eval_every and pos.global_step % cfg.eval_every == 0):
            return
        self.set_state(TrainingState.EVALUATING, f"Evaluating at step {pos.global_step}")
        val_loss, val_acc = self.evaluate()
        pos.evaluated_at = pos.global_step
        self.last_validation = (val_loss, val_acc)
        self.tracker.attach_validation(val_loss, val_acc)
        saving.write_eval_line(self, pos.global_step, pos.epoch + (0 if force else 1), val_loss, val_acc)
        is_best = math.isfinite(val_loss) and (pos.best_validation_loss is None or val_loss < pos.best_validation_loss)
        self.early.step(val_loss)
        self.emit(Evaluated(pos.global_step, pos.epoch + 1, val_loss, val_acc, is_best))
        self.log(f"Step {pos.global_step}: validation loss {val_loss:.4f}" + (" (best)" if is_best else ""))
        if is_best:
            pos.best_validation_loss = val_loss
            self.save_checkpoint(ckpt.BEST)
        if self.early.should_stop:
            self.log(f"Early stopping: no improvement in {self.early.counter} evaluations", LogLevel.INFO)
        self.set_state(TrainingState.TRAINING, "Training")

    def _maybe_save(self, force: bool) -> None:
        cfg, pos = self.cfg, self.pos
        if self.saved_at == pos.global_step or pos.global_step == 0:
            return
        if not force and not (cfg.save_every and pos.global_step % cfg.save_every == 0):
            return
        self.save_checkpoint(ckpt.step_name(pos.global_step))
        self.set_state(TrainingState.TRAINING, "Training")

    def save_checkpoint(self, name: str, at_group_start: bool = False) -> Path:
        """Write a resumable checkpoint of the current state (``Saving`` state while it runs).

        ``at_group_start``: the loader and RNG as they were at the start of the accumulation
        group in progress, so a resume redoes the whole group (a cancel mid-group).
        """
        return saving.save_checkpoint(self, name, at_group_start)

    # --- the end ------------------------------------------------------------------------------
    def finish(self, early_stopped: bool) -> Finished:
        """End a run that trained to its end: final checkpoint, best reload, final evaluation, adapter.

        ``early_stopped``: what ``train()`` returned. Raises ``RunStopped`` ("failed") when the
        weights or the history diverged or the adapter could not be saved (the training is kept
        in a checkpoint and the message says how to retry).
        """
        return saving.finish_run(self, early_stopped)

    def stop(self, stop: RunStopped) -> str | None:
        """End a cancelled or failed run: a checkpoint on cancel; the checkpoint to resume from, or None."""
        return saving.stop_run(self, stop.kind)

    def summary(self) -> RunSummary:
        """What the run's result reports: history, best metrics, counts, checkpoints, run folder."""
        pos = self.pos
        return RunSummary(
            history=self.tracker.history,
            best_metrics=self.tracker.best_metrics(),
            global_step=pos.global_step,
            samples=pos.samples,
            tokens=pos.tokens,
            skipped_steps=pos.skipped_steps,
            checkpoints=self.checkpoints.list() if self.checkpoints is not None else [],
            run_dir=self.run_dir,
        )

    def close(self) -> None:
        """Release the run folder's lock (whatever the run's outcome); safe to call twice."""
        lock, self.run_lock = self.run_lock, None
        if lock is not None:
            lock.release()

    def default_adapters_dir(self) -> Path:
        """The adapter library this job saves into."""
        return Path(self.job.adapters_dir) if self.job.adapters_dir else paths.adapters_dir()
