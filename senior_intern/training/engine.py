"""``Trainer``: runs a training job from start to adapter, with states, events and control.

    result = Trainer().run(job, control=TrainingControl(), on_event=print)

States follow the spec (Idle, Preparing, Training, Paused, Evaluating, Saving, Completed,
Failed, Cancelled); every transition is a ``StateChanged`` event. The same engine runs from the
GUI worker thread, the CLI and the tests. One run at a time per ``Trainer``.

The lifecycle of one run: validate the job and its data, lock a resumed run's folder, then
``Session.prepare`` → ``Session.train`` → ``Session.finish`` (or ``Session.stop`` when it was
cancelled or failed) → ``Session.close``. The session does the work; the Trainer maps the
outcome (or the exception) to a status and a ``TrainingResult``.
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

from senior_intern.config import TrainingJob
from senior_intern.data import check_training_data
from senior_intern.hardware.allocator import limit_heap_growth
from senior_intern.hardware.detect import empty_device_caches
from senior_intern.training import checkpoint as ckpt
from senior_intern.training import distributed
from senior_intern.training.control import TrainingControl
from senior_intern.training.events import EventCallback, LogLevel, LogMessage, TrainingState, TrainingStatus
from senior_intern.training.lifecycle import Finished, RunState, RunStopped, RunSummary
from senior_intern.training.result import TrainingResult
from senior_intern.training.runlock import RunLock, refuse_if_finished
from senior_intern.training.session import Session

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
        self._on_event: EventCallback | None = None
        self._states = RunState(self._emit)  # the one copy of the state, shared with the run's Session
        self.current_job: TrainingJob | None = None

    @property
    def state(self) -> TrainingState:
        """The current state."""
        return self._states.current

    def _emit(self, event: Any) -> None:
        if self._on_event is not None:
            self._on_event(event)

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
            self._states.set(TrainingState.PREPARING, "Preparing: loading model and dataset")
            limit_heap_growth()  # before the model loads: large blocks go back to the system when freed
            validation = job.validate()
            if not validation.is_valid:
                raise ValueError("Invalid training job: " + "; ".join(validation.errors))
            check_training_data(job)  # the data's own errors in seconds, not after a minute's model load
            if checkpoint is not None and distributed.context().is_main:  # a new run's folder is locked as it is made
                lock = RunLock.acquire(checkpoint.path.parent.parent)
                refuse_if_finished(lock.run_dir)  # another process may have finished it meanwhile
            session = Session(job, self._emit, control, self._get_monitor(), states=self._states, run_lock=lock)
            lock = None  # the session holds it now
            session.prepare(resume_from=checkpoint)
            finished = session.finish(session.train())
            self._states.set(TrainingState.COMPLETED, "Training completed" if finished.status is TrainingStatus.COMPLETED
                             else "Stopped early: validation loss stopped improving")
            return self._result(job, finished.status, session.summary(), started, t0, finished=finished)
        except RunStopped as stop:
            return self._stopped(session, job, stop, started, t0)
        except Exception as exc:  # every failure becomes a Failed result with a readable message
            stop = RunStopped("failed", self._failure_message(exc, job))
            return self._stopped(session, job, stop, started, t0, detail=traceback.format_exc())
        finally:
            self._on_event, self.current_job = None, None
            self._states.reset()
            if session is not None:
                session.close()
            if lock is not None:
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

    def _stopped(self, s: Session | None, job: TrainingJob, stop: RunStopped, started: float, t0: float, detail: str | None = None) -> TrainingResult:
        resume_from = s.stop(stop) if s is not None else None
        if stop.kind == "cancelled":
            suffix = f"; resume from {resume_from}" if resume_from else ""
            self._emit(LogMessage(LogLevel.INFO, f"Training cancelled{suffix}"))
            self._states.set(TrainingState.CANCELLED, "Training was cancelled" + suffix)
            status = TrainingStatus.CANCELLED
        else:
            self._emit(LogMessage(LogLevel.ERROR, str(stop)))
            self._states.set(TrainingState.FAILED, str(stop))
            status = TrainingStatus.FAILED
        summary = s.summary() if s is not None else RunSummary()
        return self._result(job, status, summary, started, t0, error=None if stop.kind == "cancelled" else str(stop),
                            detail=detail, resume_from=resume_from)

    @staticmethod
    def _result(job: TrainingJob, status: TrainingStatus, summary: RunSummary, started: float, t0: float,
                finished: Finished | None = None, error=None, detail=None, resume_from=None) -> TrainingResult:
        final_validation_loss = finished.final_validation_loss if finished is not None else None
        if final_validation_loss is not None and math.isnan(final_validation_loss):
            final_validation_loss = None
        history = summary.history
        return TrainingResult(
            job_id=job.id,
            status=status,
            adapter_path=str(finished.adapter_path) if finished is not None and finished.adapter_path else None,
            adapter_id=finished.adapter_id if finished is not None else None,
            final_metrics=history[-1] if history else None,
            best_metrics=summary.best_metrics,
            final_validation_loss=final_validation_loss,
            duration=time.perf_counter() - t0,
            total_steps=summary.global_step,
            total_epochs=job.training.epochs,
            samples_processed=summary.samples,
            tokens_processed=summary.tokens,
            skipped_steps=summary.skipped_steps,
            error_message=error,
            error_detail=detail,
            resume_checkpoint=resume_from,
            checkpoints=summary.checkpoints,
            metrics_history=history,
            training_config=job.training,
            lora_config=job.lora,
            started_at=started,
            ended_at=time.time(),
            run_dir=str(summary.run_dir) if summary.run_dir is not None else None,
        )
