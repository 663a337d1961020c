"""One training run in progress: its parts, its position, and the steps of the loop.

``Trainer`` (engine.py) owns the lifecycle and the states; a ``Session`` holds everything a run
needs (model, loaders, optimizer, scheduler, trackers) and does the work, one optimizer step at
a time: ``_optimizer_step``, ``_maybe_evaluate``, ``_maybe_save``.
"""

from __future__ import annotations

import itertools
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from senior_intern import paths
from senior_intern.config import TrainingJob
from senior_intern.data import BatchLoader, load_training_data
from senior_intern.hardware.detect import resolve_device, resolve_dtype
from senior_intern.hardware.metrics import HardwareMetrics
from senior_intern.lora import LoraModel
from senior_intern.models import load_base_model
from senior_intern.training import checkpoint as ckpt
from senior_intern.training import distributed
from senior_intern.training.early_stopping import EarlyStopping
from senior_intern.training.events import (
    Evaluated,
    LogLevel,
    LogMessage,
    ModelOpening,
    Progress,
    TrainingMetrics,
    TrainingState,
)
from senior_intern.training.forward import CausalLMForward, training_inputs
from senior_intern.training.gradients import clip_grad_norm
from senior_intern.training.metrics import TrainingMetricsTracker, append_jsonl
from senior_intern.training.optim import build_optimizer, build_scheduler
from senior_intern.training.plan import pad_token_id, plan_run
from senior_intern.training.precision import LossScaler, configure_matmul_precision, describe_matmul_precision
from senior_intern.training.runlock import RunLock


class RunStopped(Exception):
    """Raised inside the loop to end a run early: cancelled, or failed with a user message."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind  # "cancelled" | "failed"


@dataclass
class Position:
    """Where the run is: what a checkpoint must restore besides tensors."""

    epoch: int = 0  # 0-based epoch in progress
    global_step: int = 0
    step_in_epoch: int = 0
    samples: int = 0
    tokens: int = 0
    trained_tokens: int = 0
    skipped_steps: int = 0
    nonfinite_streak: int = 0
    best_validation_loss: float | None = None
    evaluated_at: int = -1  # step of the last evaluation
    elapsed_before: float = 0.0  # training seconds spent before this process resumed it


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
    """How the frozen base is held, for the log: ``"linear weights as GGUF blocks (Q4_1), 66.4 MB; other 113.4 MB"``."""
    from senior_intern.models.quantized import FrozenLinear, compact_bytes

    packed, other = compact_bytes(model)
    kinds = sorted({m.kind for m in model.modules() if isinstance(m, FrozenLinear)})
    if not kinds:
        return f"weights dense ({held}), {other / 1e6:.1f} MB"
    how = f"GGUF blocks ({', '.join(kinds)})" if held == "gguf" else ", ".join(kinds)
    return f"linear weights as {how}, {packed / 1e6:.1f} MB; other tensors {other / 1e6:.1f} MB"


class Session:
    """Prepares and runs one training job; reports through ``emit`` and obeys ``control``."""

    def __init__(self, job: TrainingJob, emit: Callable[[Any], None], set_state: Callable[[TrainingState, str], None], control, monitor) -> None:
        self.job = job
        self.cfg = job.training
        self.emit = emit
        self._set_state = set_state
        self.state = TrainingState.PREPARING
        self.control = control
        self.monitor = monitor
        self.pos = Position()
        self.tracker = TrainingMetricsTracker()
        self.early = EarlyStopping(self.cfg.early_stopping_patience, self.cfg.early_stopping_min_delta)
        self.run_dir: Path | None = None
        self.checkpoints: ckpt.CheckpointManager | None = None
        self._hw = HardwareMetrics()
        self._hw_time = 0.0
        self._active_start = 0.0
        self._saved_at = -1
        self._start_step = 0
        self.group_start: tuple[dict[str, Any], dict[str, Any]] | None = None
        self.last_validation: tuple[float, float] | None = None
        self.run_lock: RunLock | None = None  # held for the whole run; the Trainer releases it
        self.dp = distributed.DataParallel()  # data parallel hooks; pass-throughs in one process

    def set_state(self, new: TrainingState, message: str = "") -> None:
        """Move to ``new`` (the Trainer emits the StateChanged event)."""
        self.state = new
        self._set_state(new, message)

    def _opening(self, done: int, total: int) -> None:
        """Opening progress of the base model as ``ModelOpening`` events (at most twice a second)."""
        now = time.monotonic()
        if 0 < done < total and now - getattr(self, "_opening_shown", 0.0) < OPENING_INTERVAL:
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
        self.log(f"Loading base model {job.base_model_path}")
        loaded = load_base_model(job.base_model_path, device=self.device, dtype=self.dtype,
                                 base_quantization=cfg.base_quantization, progress=self._opening)
        self.model_info, self.tokenizer = loaded.info, loaded.tokenizer
        self.log(f"Base model opened in {loaded.info.load_seconds:.1f} s; {held_summary(loaded.model, loaded.info.base_held)}")
        context = getattr(self.model_info, "context_length", 0)
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
        if cfg.gradient_checkpointing:
            kwargs = {"use_reentrant": False}
            if hasattr(loaded.model, "activation_checkpointing_enable"):
                loaded.model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
            elif hasattr(loaded.model, "gradient_checkpointing_enable"):
                loaded.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
            else:
                raise ValueError(f"{job.base_model_path}: this model does not support gradient checkpointing; turn it off")
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
                job.save(self.run_dir / "job.toml")
                (self.run_dir / "metrics.jsonl").write_text("", encoding="utf-8")
            self.dp.barrier()
            self.train_loader.set_epoch(0)
        self.checkpoints = ckpt.CheckpointManager(self.run_dir / "checkpoints", cfg.max_checkpoints)

    def _restore(self, c: ckpt.Checkpoint) -> None:
        self.run_dir = c.path.parent.parent
        self.lora.load_lora_state_dict(c.lora_state)
        self.optimizer.load_state_dict(c.trainer_state["optimizer"])
        self.scheduler.load_state_dict(c.trainer_state["scheduler"])
        self.scaler.load_state_dict(c.trainer_state.get("scaler"))
        s = c.state
        saved_world, ranks_rng = int(s.get("world_size", 1)), c.trainer_state.get("rng_ranks")
        same_world = saved_world == self.dp.world_size
        ckpt.restore_rng_state(ranks_rng[self.dp.rank] if same_world and ranks_rng else c.trainer_state["rng"])
        self.pos = Position(**s["position"])
        self.train_loader.load_state_dict(s["loader"])
        if not same_world:  # the loader kept the rows already trained this epoch
            self.pos.step_in_epoch = self.train_loader.index // self.cfg.gradient_accumulation_steps
            self.log(f"The checkpoint was written by {saved_world} process(es), this run has {self.dp.world_size}: "
                     f"continuing at batch {self.train_loader.index} of epoch {self.pos.epoch + 1} with "
                     f"{self.steps_per_epoch} steps per epoch; not bitwise the same as an uninterrupted run",
                     LogLevel.WARNING)
        self.early.load_state_dict(s["early_stopping"])
        self.tracker.load_records(s["history"])
        self._saved_at = self.pos.global_step
        if self.dp.is_main:
            with (self.run_dir / "metrics.jsonl").open("w", encoding="utf-8"):
                pass
        for m in self.tracker.history:
            self._write_metrics(m)
        self.log(f"Resumed from {c.path} at step {self.pos.global_step} of {self.total_steps}")

    # --- the loop -----------------------------------------------------------------------------
    def train(self) -> bool:
        """Run to the end; True when stopped early by early stopping."""
        cfg, pos = self.cfg, self.pos
        self._active_start = time.perf_counter()
        self._start_step = pos.global_step
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
            self._active_start += time.perf_counter() - paused_at  # paused time is not training time
            if not self.control.cancelled:
                self.set_state(was, "Resumed")
        if self.control.cancelled:
            raise RunStopped("cancelled", "Training was cancelled by user")

    def _optimizer_step(self, group: list) -> None:
        cfg, pos = self.cfg, self.pos
        # Counts over every rank: the loss is normalised by the global number of trained tokens.
        total_trained, n_samples, n_tokens = (int(v) for v in self.dp.sum(
            sum(b.n_trained_tokens for b in group), sum(b.n_samples for b in group), sum(b.n_tokens for b in group)))
        normaliser = max(total_trained, 1)
        loss_sum = torch.zeros((), device=self.device, dtype=torch.float32)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        for batch, sync in self.dp.micro_steps(group):  # gradients all-reduced on the last only
            self.check_control()
            # Labels stay on the CPU: the loss selects trained positions without a device sync.
            with sync:
                parts = self.dp.forward(training_inputs(batch, self.dtype, self.device, self.forward.segments), batch.labels)
                self.dp.backward(self.scaler.scale(parts.loss_sum * self.dp.loss_scale / normaliser))
            loss_sum += parts.loss_sum.detach().float()
            correct += parts.n_correct
        # One device sync per optimizer step: the loss and the gradient norm.
        loss_total, correct_total = self.dp.sum(loss_sum, correct)
        loss = loss_total / normaliser
        self.scaler.unscale(self.optimizer)  # float16: true gradients before clipping
        grad_norm = clip_grad_norm(self.params, cfg.max_grad_norm)
        if math.isfinite(loss) and math.isfinite(grad_norm):
            self.scaler.step(self.optimizer)
            pos.nonfinite_streak = 0
        elif math.isfinite(loss) and self.scaler.overflowed():  # float16 overflow: a smaller scale, not divergence
            pos.skipped_steps += 1
            self.log(f"Step {pos.global_step + 1}: float16 gradients overflowed at loss scale "
                     f"{self.scaler.scale_value:g}; step skipped, scale halved", LogLevel.INFO)
        else:
            pos.skipped_steps += 1
            pos.nonfinite_streak += 1
            self.log(f"Step {pos.global_step + 1}: non-finite loss or gradient; step skipped", LogLevel.WARNING)
            if pos.nonfinite_streak >= cfg.max_nonfinite_steps:
                raise RunStopped(
                    "failed",
                    f"The loss or gradients were NaN/Inf for {pos.nonfinite_streak} steps in a row; training "
                    f"diverged. Lower the learning rate (now {cfg.learning_rate:g}) or max_grad_norm and resume "
                    "from the last good checkpoint.",
                )
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        lr = self.optimizer.param_groups[0]["lr"]
        self.scheduler.step()
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
        self.tracker.record(metrics)
        self._write_metrics(metrics, eval_line=False)
        self.emit(self._progress(metrics))

    def _progress(self, metrics: TrainingMetrics) -> Progress:
        pos = self.pos
        now = time.perf_counter()
        if self.monitor is not None and now - self._hw_time >= 1.0:
            self._hw, self._hw_time = self.monitor.sample(), now
        active = now - self._active_start
        elapsed = pos.elapsed_before + active
        done_here = max(1, pos.global_step - getattr(self, "_start_step", 0))
        eta = active / done_here * (self.total_steps - pos.global_step)
        return Progress(
            epoch=pos.epoch + 1,
            total_epochs=self.cfg.epochs,
            step_in_epoch=pos.step_in_epoch,
            steps_per_epoch=self.steps_per_epoch,
            global_step=pos.global_step,
            total_steps=self.total_steps,
            samples_processed=pos.samples,
            total_samples=self.total_samples * self.cfg.epochs,
            tokens_processed=pos.tokens,
            trained_tokens_processed=pos.trained_tokens,
            elapsed=elapsed,
            eta=eta,
            metrics=metrics,
            hardware=self._hw,
            operation=f"Epoch {pos.epoch + 1}/{self.cfg.epochs}, step {pos.step_in_epoch}/{self.steps_per_epoch}",
        )

    def _write_metrics(self, m: TrainingMetrics, eval_line: bool = True) -> None:
        if not self.dp.is_main:
            return
        path = self.run_dir / "metrics.jsonl"
        append_jsonl(path, {"type": "train", "step": m.step, "epoch": m.epoch, "loss": m.loss, "lr": m.learning_rate,
                            "grad_norm": m.grad_norm, "token_accuracy": m.token_accuracy, "time": m.timestamp})
        if eval_line and m.validation_loss is not None:
            self._write_eval_line(m.step, m.epoch, m.validation_loss, m.validation_accuracy)

    def _write_eval_line(self, step: int, epoch: int, loss: float, acc: float | None) -> None:
        if not self.dp.is_main:
            return
        append_jsonl(self.run_dir / "metrics.jsonl",
                     {"type": "eval", "step": step, "epoch": epoch, "validation_loss": loss, "validation_accuracy": acc, "time": time.time()})

    # --- evaluation and saving ----------------------------------------------------------------
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
        self._write_eval_line(pos.global_step, pos.epoch + (0 if force else 1), val_loss, val_acc)
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
        if self._saved_at == pos.global_step or pos.global_step == 0:
            return
        if not force and not (cfg.save_every and pos.global_step % cfg.save_every == 0):
            return
        self.save_checkpoint(ckpt.step_name(pos.global_step))
        self.set_state(TrainingState.TRAINING, "Training")

    def save_checkpoint(self, name: str, at_group_start: bool = False) -> Path:
        """Write a resumable checkpoint of the current state (``Saving`` state while it runs)."""
        self.set_state(TrainingState.SAVING, f"Saving checkpoint {name}")
        pos = self.pos
        if at_group_start and self.group_start is not None:
            loader_state, rng_state = self.group_start  # a cancel mid-group: redo the whole group
        else:
            loader_state, rng_state = self.train_loader.state_dict(), ckpt.capture_rng_state()
        last = self.tracker.history[-1] if self.tracker.total_steps else None
        position = dict(vars(pos))
        position["elapsed_before"] = pos.elapsed_before + (time.perf_counter() - self._active_start)
        state = {
            "global_step": pos.global_step,
            "epoch": pos.epoch,
            "loss": last.loss if last else None,
            "validation_loss": last.validation_loss if last else None,
            "position": position,
            "loader": loader_state,
            "early_stopping": self.early.state_dict(),
            "history": self.tracker.to_records(),
        }
        trainer_state = {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": rng_state,
            "scaler": self.scaler.state_dict(),
        }
        # Every rank's RNG state and loader position; rank 0 alone writes, the others wait.
        trainer_state["rng_ranks"] = self.dp.gather(rng_state)
        state["world_size"], state["loader_ranks"] = self.dp.world_size, self.dp.gather(loader_state)
        path = self.checkpoints.dir / name
        if self.dp.is_main:
            info = self.checkpoints.save(name, lora_state=self.lora.lora_state_dict(), trainer_state=trainer_state, state=state, job=self.job)
            path = Path(info.path)
            self.log(f"Checkpoint {name} saved ({info.size_bytes / 1e6:.1f} MB)")
        self.dp.barrier()
        if name != ckpt.BEST:
            self._saved_at = pos.global_step
        return path

    def default_adapters_dir(self) -> Path:
        """The adapter library this job saves into."""
        return Path(self.job.adapters_dir) if self.job.adapters_dir else paths.adapters_dir()
