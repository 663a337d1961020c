"""``Trainer``: runs a training job from start to adapter, with states, events and control.

    result = Trainer().run(job, control=TrainingControl(), on_event=print)

States follow the spec (Idle, Preparing, Training, Paused, Evaluating, Saving, Completed,
Failed, Cancelled); every transition is a ``StateChanged`` event. The same engine runs from the
GUI worker thread, the CLI and the tests. One run at a time per ``Trainer``.
"""

from __future__ import annotations

import gc
import math
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import torch

from senior_intern.adapters.store import save_adapter
from senior_intern.config import TrainingJob
from senior_intern.data import check_training_data
from senior_intern.hardware.detect import empty_device_caches
from senior_intern.training import checkpoint as ckpt
from senior_intern.training import distributed
from senior_intern.training.control import TrainingControl
from senior_intern.training.events import EventCallback, LogLevel, LogMessage, StateChanged, TrainingState, TrainingStatus
from senior_intern.training.metrics import divergence
from senior_intern.training.result import TrainingResult
from senior_intern.training.runlock import RunLock, mark_finished, refuse_if_finished
from senior_intern.training.session import RunStopped, Session

_OOM_MARKERS = ("out of memory", "can't allocate memory", "cannot allocate memory", "defaultcpuallocator")


def is_out_of_memory(exc: BaseException) -> bool:
    """True for CUDA/MPS out-of-memory errors and failed CPU allocations."""
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(exc, RuntimeError) and any(m in str(exc).lower() for m in _OOM_MARKERS)


class Trainer:
    """The training service: ``run()`` a job or ``resume()`` a checkpoint; one run at a time."""

    def __init__(self, monitor: Any | None = None) -> None:
        """``monitor``: something with ``sample() -> HardwareMetrics`` (default: a HardwareMonitor)."""
        self._monitor = monitor
        self._lock = threading.Lock()
        self._state = TrainingState.IDLE
        self._on_event: EventCallback | None = None
        self.current_job: TrainingJob | None = None

    @property
    def state(self) -> TrainingState:
        """The current state."""
        return self._state

    def _emit(self, event: Any) -> None:
        if self._on_event is not None:
            self._on_event(event)

    def _set_state(self, new: TrainingState, message: str = "") -> None:
        previous, self._state = self._state, new
        if previous != new:
            self._emit(StateChanged(previous, new, message))

    def run(self, job: TrainingJob, control: TrainingControl | None = None, on_event: EventCallback | None = None) -> TrainingResult:
        """Train ``job`` to the end (or until cancelled / failed / early-stopped)."""
        return self._execute(job, None, control, on_event)

    def resume(self, path: str | Path, control: TrainingControl | None = None, on_event: EventCallback | None = None) -> TrainingResult:
        """Continue a run from a checkpoint folder, or from the newest good checkpoint of a run folder."""
        def skipped(text: str) -> None:
            if on_event is not None:
                on_event(LogMessage(LogLevel.WARNING, text))

        checkpoint = ckpt.load(ckpt.find_resumable(path, notify=skipped))
        refuse_if_finished(checkpoint.path.parent.parent)
        return self._execute(checkpoint.job, checkpoint, control, on_event)

    # --- lifecycle ------------------------------------------------------------------------------
    def _execute(self, job, checkpoint, control, on_event) -> TrainingResult:
        if not self._lock.acquire(blocking=False):
            raise RuntimeError("A training run is already in progress; wait for it to end or cancel it first")
        self._on_event, self.current_job = on_event, job
        started, t0 = time.time(), time.perf_counter()
        session: Session | None = None
        lock: RunLock | None = None
        try:
            self._set_state(TrainingState.PREPARING, "Preparing: loading model and dataset")
            validation = job.validate()
            if not validation.is_valid:
                raise ValueError("Invalid training job: " + "; ".join(validation.errors))
            check_training_data(job)  # the data's own errors in seconds, not after a minute's model load
            if checkpoint is not None and distributed.context().is_main:  # a new run's folder is locked as it is made
                lock = RunLock.acquire(checkpoint.path.parent.parent)
                refuse_if_finished(lock.run_dir)  # another process may have finished it meanwhile
            session = Session(job, self._emit, self._set_state, control, self._get_monitor())
            session.run_lock = lock
            session.prepare(resume_from=checkpoint)
            session.set_state(TrainingState.TRAINING, "Training")
            early_stopped = session.train()
            return self._finish(session, early_stopped, started, t0)
        except RunStopped as stop:
            return self._stopped(session, job, stop, started, t0)
        except Exception as exc:  # every failure becomes a Failed result with a readable message
            stop = RunStopped("failed", self._failure_message(exc, job))
            return self._stopped(session, job, stop, started, t0, detail=traceback.format_exc())
        finally:
            self._on_event, self.current_job = None, None
            self._state = TrainingState.IDLE
            if session is not None and session.run_lock is not None:
                session.run_lock.release()
            elif lock is not None:
                lock.release()
            del session
            gc.collect()
            empty_device_caches()  # CUDA and MPS
            self._lock.release()

    def _get_monitor(self):
        if self._monitor is None:
            from senior_intern.hardware.monitor import HardwareMonitor

            self._monitor = HardwareMonitor()
        return self._monitor

    @staticmethod
    def _failure_message(exc: BaseException, job: TrainingJob) -> str:
        if is_out_of_memory(exc):
            t = job.training
            return (
                f"Out of memory at batch size {t.batch_size} and sequence length {t.max_seq_length}. "
                "Lower batch_size or max_seq_length (or turn on gradient_checkpointing) and resume from "
                "the last checkpoint."
            )
        if isinstance(exc, (ValueError, FileNotFoundError, OSError)):
            return str(exc)
        return f"{type(exc).__name__}: {exc}"

    def _finish(self, s: Session, early_stopped: bool, started: float, t0: float) -> TrainingResult:
        status = TrainingStatus.EARLY_STOPPED if early_stopped else TrainingStatus.COMPLETED
        if not all(torch.isfinite(p).all() for p in s.params):
            raise RunStopped("failed", "The adapter weights are not finite (the run diverged); no adapter was saved. "
                             "Lower the learning rate (or LoRA alpha) and train again")
        # The last steps since the last periodic save are kept before anything else can fail:
        # a failed adapter save (full disk) then loses nothing and resume retries it.
        final_checkpoint = s.save_checkpoint(ckpt.step_name(s.pos.global_step)) if s._saved_at != s.pos.global_step else None
        diverged = divergence(s.tracker.history)
        if diverged is not None:
            raise RunStopped("failed", f"The run diverged: {diverged}; no adapter was saved. Lower the learning rate and train again")
        if early_stopped and s.checkpoints.best() is not None:
            s.lora.load_lora_state_dict(ckpt.load(s.checkpoints.best()).lora_state)
            s.log("Final adapter taken from the best checkpoint")
        final_val = None
        if s.val_loader is not None:
            best = s.pos.best_validation_loss
            if early_stopped and best is not None:
                final_val = best
            elif s.pos.evaluated_at == s.pos.global_step and s.last_validation is not None:
                final_val = s.last_validation[0]
            else:
                self._set_state(TrainingState.EVALUATING, "Final evaluation")
                final_val = s.evaluate()[0]
        self._set_state(TrainingState.SAVING, "Saving the adapter")
        record = None
        if s.dp.enabled:  # data parallel: the same adapter on every rank, or the run fails
            s.log(f"Adapter identical on all {s.dp.world_size} ranks (sha256 {s.dp.check_identical(s.lora.lora_state_dict())[:16]})")
        if s.dp.is_main:  # rank 0 alone writes the adapter
            record = self._save_adapter(s, final_val, final_checkpoint, status)
        s.dp.barrier()
        self._set_state(TrainingState.COMPLETED, "Training completed" if not early_stopped else "Stopped early: validation loss stopped improving")
        return self._result(s, s.job, status, started, t0, adapter=record, final_validation_loss=final_val)

    @staticmethod
    def _save_adapter(s: Session, final_val, final_checkpoint, status: TrainingStatus):
        """Write the adapter into the library and mark the run finished; a failure says how to retry."""
        try:
            record = save_adapter(
                s.default_adapters_dir(),
                lora=s.lora,
                job=s.job,
                model_info=s.model_info,
                history=s.tracker.history,
                final_validation_loss=final_val,
                run_dir=s.run_dir,
            )
        except OSError as exc:
            kept = final_checkpoint or s.checkpoints.latest()
            raise RunStopped(
                "failed",
                f"Could not save the adapter to {s.default_adapters_dir()}: {exc}. All training is kept in the "
                f"checkpoint {kept}; free space (or fix the library folder) and retry the save with: "
                f"senior-intern resume {s.run_dir}",
            ) from exc
        mark_finished(s.run_dir, record.id, str(record.path), status.value)
        s.log(f"Adapter saved: {record.path}")
        return record

    def _stopped(self, s: Session | None, job: TrainingJob, stop: RunStopped, started: float, t0: float, detail: str | None = None) -> TrainingResult:
        resume_from = None
        if s is not None and getattr(s, "checkpoints", None) is not None:
            if stop.kind == "cancelled" and s.pos.global_step > 0:
                try:
                    resume_from = str(s.save_checkpoint(ckpt.step_name(s.pos.global_step), at_group_start=True))
                except Exception as exc:  # saving on cancel is best effort; the last good one remains
                    self._emit(LogMessage(LogLevel.ERROR, f"Could not save a checkpoint on cancel: {exc}"))
            if resume_from is None:
                latest = s.checkpoints.latest()
                resume_from = str(latest) if latest else None
        if stop.kind == "cancelled":
            suffix = f"; resume from {resume_from}" if resume_from else ""
            self._emit(LogMessage(LogLevel.INFO, f"Training cancelled{suffix}"))
            self._set_state(TrainingState.CANCELLED, "Training was cancelled" + suffix)
            status = TrainingStatus.CANCELLED
        else:
            self._emit(LogMessage(LogLevel.ERROR, str(stop)))
            self._set_state(TrainingState.FAILED, str(stop))
            status = TrainingStatus.FAILED
        return self._result(s, job, status, started, t0, error=None if stop.kind == "cancelled" else str(stop),
                            detail=detail, resume_from=resume_from)

    @staticmethod
    def _result(s, job, status, started, t0, adapter=None, final_validation_loss=None, error=None, detail=None, resume_from=None) -> TrainingResult:
        history = s.tracker.history if s is not None else []
        pos = s.pos if s is not None else None
        checkpoints = s.checkpoints.list() if s is not None and s.checkpoints is not None else []
        best = s.tracker.best_metrics() if s is not None else None
        if final_validation_loss is not None and math.isnan(final_validation_loss):
            final_validation_loss = None
        return TrainingResult(
            job_id=job.id,
            status=status,
            adapter_path=str(adapter.path) if adapter else None,
            adapter_id=adapter.id if adapter else None,
            final_metrics=history[-1] if history else None,
            best_metrics=best,
            final_validation_loss=final_validation_loss,
            duration=time.perf_counter() - t0,
            total_steps=pos.global_step if pos else 0,
            total_epochs=job.training.epochs,
            samples_processed=pos.samples if pos else 0,
            tokens_processed=pos.tokens if pos else 0,
            skipped_steps=pos.skipped_steps if pos else 0,
            error_message=error,
            error_detail=detail,
            resume_checkpoint=resume_from,
            checkpoints=checkpoints,
            metrics_history=history,
            training_config=job.training,
            lora_config=job.lora,
            started_at=started,
            ended_at=time.time(),
            run_dir=str(s.run_dir) if s is not None and s.run_dir is not None else None,
        )
